{
  "targets": [
    {
      "target_name": "ggml_pool",
      "sources": ["ggml_pool.c"],
      "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wextra"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
