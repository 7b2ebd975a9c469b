/*
 * Persistent worker threads for llama.cpp's CPU backend.
 *
 * node-llama-cpp attaches no ggml thread pool to its contexts and its prebuilt binaries are built without
 * OpenMP, so every graph computation (one per decode step) creates its worker threads anew and ends them.
 * On a small machine the new thread tends to start on the core of the thread that created it, which spins in
 * ggml_barrier until it is preempted; each step then waits a scheduler tick (measured on 2 cores: the tiny
 * model decodes at 70 tok/s with 2 threads against 2,700 with 1).
 *
 * This module defines ggml_graph_compute. Loaded with RTLD_GLOBAL before node-llama-cpp loads its CPU
 * backend, it takes the CPU backend's calls to ggml_graph_compute (they go through the PLT), hands each
 * computation a thread pool that outlives it (ggml_threadpool_new, the pool llama-bench and llama-server
 * attach), and calls the backend's own ggml_graph_compute. A pool serves one computation at a time; idle
 * pools wait in a list keyed by library and thread count, so concurrent contexts each get their own.
 *
 * It also defines ggml_backend_buffer_clear, so that the KV cache becomes resident as it fills instead of all at
 * once (see "Zeroing large buffers" below), and exports trim(), glibc's malloc_trim, for after a model loads.
 *
 * The struct layouts below are those of ggml-cpu.h and ggml.h in the llama.cpp that node-llama-cpp 3.22
 * bundles. The TypeScript loader enables this module for those versions only, and the first call checks the
 * layout against ggml_threadpool_params_default; on a mismatch every call passes straight through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct ggml_threadpool;
struct ggml_cgraph;
typedef bool (*ggml_abort_callback)(void *data);

struct ggml_cplan {
  size_t work_size;
  uint8_t *work_data;
  int n_threads;
  struct ggml_threadpool *threadpool;
  ggml_abort_callback abort_callback;
  void *abort_callback_data;
  bool use_ref;
};

#define GGML_MAX_N_THREADS 512
struct ggml_threadpool_params {
  bool cpumask[GGML_MAX_N_THREADS];
  int n_threads;
  int prio;
  uint32_t poll;
  bool strict_cpu;
  bool paused;
};

#define GGML_STATUS_FAILED (-1)

typedef int (*compute_fn)(struct ggml_cgraph *, struct ggml_cplan *);
typedef struct ggml_threadpool *(*pool_new_fn)(struct ggml_threadpool_params *);
typedef struct ggml_threadpool_params (*pool_defaults_fn)(int);
typedef void (*pool_free_fn)(struct ggml_threadpool *);

/* One CPU backend library (normally one: ggml loads the best variant for the CPU). */
struct backend_lib {
  void *base;
  compute_fn compute;
  pool_new_fn pool_new;
  pool_defaults_fn pool_defaults;
  pool_free_fn pool_free;
};

#define MAX_LIBS 8
#define MAX_IDLE 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct backend_lib libs[MAX_LIBS];
static int lib_count;
static struct {
  struct ggml_threadpool *pool;
  int lib;
  int n_threads;
} idle[MAX_IDLE];
static int idle_count;

static atomic_int poll_level = 0;
static atomic_bool disabled = false;
/* Set by release(): no computation gets a pool any more, and a pool in use is freed when its computation ends. */
static bool released = false;
static char disabled_reason[160];
static atomic_ullong pooled_computes, passthrough_computes, pools_created;

int ggml_graph_compute(struct ggml_cgraph *cgraph, struct ggml_cplan *cplan);

static void disable(const char *reason) {
  if (!atomic_load(&disabled)) {
    snprintf(disabled_reason, sizeof disabled_reason, "%s", reason);
    atomic_store(&disabled, true);
    fprintf(stderr, "lucena ggml_pool: persistent threads off: %s\n", reason);
  }
}

/* A handle on the loaded library `info` describes (dladdr of a caller), for dlsym: it finds the symbols of that
   library and its dependencies, never this module's. Close it with dlclose; the library stays loaded by its owner
   (RTLD_NOLOAD only takes a reference). */
static void *library_of(const Dl_info *info) {
  return dlopen(info->dli_fname, RTLD_NOW | RTLD_NOLOAD);
}

/* The backend library that called us; its own symbols, never ours. Called with `lock` held. */
static int backend_of(void *caller) {
  Dl_info info;
  if (!dladdr(caller, &info) || !info.dli_fname) return -1;
  for (int i = 0; i < lib_count; i++)
    if (libs[i].base == info.dli_fbase) return i;
  if (lib_count == MAX_LIBS) return -1;

  void *handle = library_of(&info);
  if (!handle) return -1;
  struct backend_lib lib = {
      .base = info.dli_fbase,
      .compute = (compute_fn)dlsym(handle, "ggml_graph_compute"),
      .pool_new = (pool_new_fn)dlsym(handle, "ggml_threadpool_new"),
      .pool_defaults = (pool_defaults_fn)dlsym(handle, "ggml_threadpool_params_default"),
      .pool_free = (pool_free_fn)dlsym(handle, "ggml_threadpool_free"),
  };
  dlclose(handle);
  if (!lib.compute || lib.compute == ggml_graph_compute || !lib.pool_new || !lib.pool_defaults || !lib.pool_free) return -1;

  /* The layout check: the defaults as ggml documents them (n_threads as asked, normal priority, poll 50). */
  struct ggml_threadpool_params probe = lib.pool_defaults(3);
  if (probe.n_threads != 3 || probe.prio != 0 || probe.poll != 50 || probe.strict_cpu || probe.paused) {
    disable("ggml_threadpool_params layout differs from the one this module was built for");
  }
  libs[lib_count] = lib;
  return lib_count++;
}

int ggml_graph_compute(struct ggml_cgraph *cgraph, struct ggml_cplan *cplan) {
  void *caller = __builtin_return_address(0);

  int n_threads = cplan->n_threads;
  bool pooled = cplan->threadpool == NULL && n_threads >= 2 && n_threads <= GGML_MAX_N_THREADS;
  struct ggml_threadpool *pool = NULL;

  /* One critical section: find the calling backend and, when this computation gets a pool, take an idle one. */
  pthread_mutex_lock(&lock);
  int lib = backend_of(caller);
  pooled = pooled && lib >= 0 && !atomic_load(&disabled) && !released;
  for (int i = idle_count - 1; pooled && i >= 0; i--) {
    if (idle[i].lib == lib && idle[i].n_threads == n_threads) {
      pool = idle[i].pool;
      idle[i] = idle[--idle_count];
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  if (lib < 0) {
    fprintf(stderr, "lucena ggml_pool: ggml_graph_compute called from outside a ggml CPU backend\n");
    return GGML_STATUS_FAILED;
  }
  compute_fn compute = libs[lib].compute;

  if (!pooled) {
    atomic_fetch_add(&passthrough_computes, 1);
    return compute(cgraph, cplan);
  }

  if (pool == NULL) {
    struct ggml_threadpool_params params = libs[lib].pool_defaults(n_threads);
    params.poll = (uint32_t)atomic_load(&poll_level);
    pool = libs[lib].pool_new(&params);
    if (pool == NULL) {
      atomic_fetch_add(&passthrough_computes, 1);
      return compute(cgraph, cplan);
    }
    atomic_fetch_add(&pools_created, 1);
  }

  cplan->threadpool = pool;
  int status = compute(cgraph, cplan);
  cplan->threadpool = NULL;
  atomic_fetch_add(&pooled_computes, 1);

  pthread_mutex_lock(&lock);
  bool kept = !released && idle_count < MAX_IDLE;
  if (kept) {
    idle[idle_count].pool = pool;
    idle[idle_count].lib = lib;
    idle[idle_count].n_threads = n_threads;
    idle_count++;
  }
  pthread_mutex_unlock(&lock);
  /* Released meanwhile, or more than MAX_IDLE computations at once: this pool is not kept. */
  if (!kept) libs[lib].pool_free(pool);
  return status;
}

/*
 * Ends every kept pool's threads (ggml_threadpool_free wakes and joins them) and keeps no pool from now on.
 * Called when the engines have been disposed, before the process exits: exit() runs the static destructors of
 * llama.cpp's libraries, and no thread of ours should then still be parked inside the CPU backend's code.
 * Computations that still run afterwards pass straight through. Returns how many pools were freed.
 */
static int release_pools(void) {
  struct ggml_threadpool *pools[MAX_IDLE];
  int owners[MAX_IDLE];
  pthread_mutex_lock(&lock);
  released = true;
  int n = idle_count;
  for (int i = 0; i < n; i++) {
    pools[i] = idle[i].pool;
    owners[i] = idle[i].lib;
  }
  idle_count = 0;
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < n; i++) libs[owners[i]].pool_free(pools[i]);
  return n;
}

/* ---- Zeroing large buffers without touching them ---- */

/*
 * llama.cpp zeroes its KV cache buffer with ggml_backend_buffer_clear right after allocating it (and again when
 * the whole cache is cleared). On the CPU backend that is a memset over the whole buffer, which makes every page
 * of it resident at once: with 8 sequences of 3,072 tokens, about 1.1 GB before the first request.
 *
 * For private anonymous memory, madvise(MADV_DONTNEED) has the same effect as writing zeros (the next read of a
 * page finds a fresh zero page) and leaves the pages unbacked until a write. So this module defines
 * ggml_backend_buffer_clear too: a large host buffer cleared to 0 whose whole range lies in private anonymous
 * mappings is zeroed that way (the partial pages at each end with memset); anything else goes to ggml's own
 * function. The KV cache then takes memory as tokens are written into it, not up front.
 */

typedef struct ggml_backend_buffer *ggml_backend_buffer_t;
typedef void (*buffer_clear_fn)(ggml_backend_buffer_t, uint8_t);
typedef void *(*buffer_base_fn)(ggml_backend_buffer_t);
typedef size_t (*buffer_size_fn)(ggml_backend_buffer_t);
typedef bool (*buffer_is_host_fn)(ggml_backend_buffer_t);

#define LAZY_ZERO_MIN (4u << 20)

static atomic_ullong lazy_cleared_bytes, lazy_clears;

void ggml_backend_buffer_clear(ggml_backend_buffer_t buffer, uint8_t value);

/* Whether [start, end) lies wholly in private anonymous mappings ("rw-p", no file), from /proc/self/maps. */
static bool private_anonymous(uintptr_t start, uintptr_t end) {
  FILE *maps = fopen("/proc/self/maps", "r");
  if (!maps) return false;
  char line[512];
  uintptr_t covered = start;
  while (covered < end && fgets(line, sizeof line, maps)) {
    unsigned long lo, hi, offset, inode;
    char perms[8], dev[16];
    int path_at = 0;
    if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &lo, &hi, perms, &offset, dev, &inode, &path_at) < 6) continue;
    if (hi <= covered || lo > covered) continue;
    const char *path = path_at > 0 ? line + path_at : "";
    bool anonymous = inode == 0 && (path[0] == '\n' || path[0] == '\0' || strncmp(path, "[heap]", 6) == 0);
    if (!anonymous || strcmp(perms, "rw-p") != 0) break;
    covered = hi;
  }
  fclose(maps);
  return covered >= end;
}

/* Zeroes [base, base + size) by dropping its whole pages (and writing zeros to the partial pages at its ends),
   when the range lies wholly in private anonymous memory; false, having changed nothing, otherwise. */
static bool zero_lazily(uint8_t *base, size_t size) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = (uintptr_t)base, end = start + size;
  uintptr_t inner_start = (start + page - 1) & ~(page - 1), inner_end = end & ~(page - 1);
  if (inner_end <= inner_start || !private_anonymous(start, end) ||
      madvise((void *)inner_start, inner_end - inner_start, MADV_DONTNEED) != 0) {
    return false;
  }
  memset(base, 0, inner_start - start);
  memset((void *)inner_end, 0, end - inner_end);
  atomic_fetch_add(&lazy_clears, 1);
  atomic_fetch_add(&lazy_cleared_bytes, inner_end - inner_start);
  return true;
}

/* ggml's own buffer functions, looked up through the library that called us (libllama and its dependencies,
   where ggml-base is). Looked up once, with `lock` held. */
static struct {
  bool looked_up;
  buffer_clear_fn clear;
  buffer_base_fn base;
  buffer_size_fn size;
  buffer_is_host_fn is_host;
} ggml_buffer;

static void find_ggml_buffer(void *caller) {
  ggml_buffer.looked_up = true;
  Dl_info info;
  if (!dladdr(caller, &info) || !info.dli_fname) return;
  void *handle = library_of(&info);
  if (!handle) return;
  buffer_clear_fn clear = (buffer_clear_fn)dlsym(handle, "ggml_backend_buffer_clear");
  if (clear && clear != ggml_backend_buffer_clear) {
    ggml_buffer.base = (buffer_base_fn)dlsym(handle, "ggml_backend_buffer_get_base");
    ggml_buffer.size = (buffer_size_fn)dlsym(handle, "ggml_backend_buffer_get_size");
    ggml_buffer.is_host = (buffer_is_host_fn)dlsym(handle, "ggml_backend_buffer_is_host");
    ggml_buffer.clear = clear;
  }
  dlclose(handle);
}

void ggml_backend_buffer_clear(ggml_backend_buffer_t buffer, uint8_t value) {
  pthread_mutex_lock(&lock);
  if (!ggml_buffer.looked_up) find_ggml_buffer(__builtin_return_address(0));
  pthread_mutex_unlock(&lock);
  if (!ggml_buffer.clear) {
    /* Cannot happen with ggml's libraries (the caller links ggml-base); a plain memset would need the
       buffer's layout, so say so loudly rather than guess. */
    fprintf(stderr, "lucena ggml_pool: ggml_backend_buffer_clear not found beside its caller; aborting\n");
    abort();
  }
  buffer_clear_fn real_clear = ggml_buffer.clear;
  buffer_base_fn get_base = ggml_buffer.base;
  buffer_size_fn get_size = ggml_buffer.size;
  buffer_is_host_fn is_host = ggml_buffer.is_host;
  if (value != 0 || !get_base || !get_size || !is_host || !buffer) {
    real_clear(buffer, value);
    return;
  }
  size_t size = get_size(buffer);
  uint8_t *base = size >= LAZY_ZERO_MIN && is_host(buffer) ? (uint8_t *)get_base(buffer) : NULL;
  if (!base || !zero_lazily(base, size)) real_clear(buffer, value);
}

/* ---- JavaScript side: stats(), setPoll(level), release() ---- */

static napi_value set_number(napi_env env, napi_value obj, const char *key, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, obj, key, v);
  return obj;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_get_boolean(env, !atomic_load(&disabled), &v);
  napi_set_named_property(env, obj, "active", v);
  if (atomic_load(&disabled)) {
    napi_create_string_utf8(env, disabled_reason, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, obj, "reason", v);
  }
  set_number(env, obj, "pooledComputes", (double)atomic_load(&pooled_computes));
  set_number(env, obj, "passthroughComputes", (double)atomic_load(&passthrough_computes));
  set_number(env, obj, "poolsCreated", (double)atomic_load(&pools_created));
  pthread_mutex_lock(&lock);
  set_number(env, obj, "poolsKept", idle_count);
  pthread_mutex_unlock(&lock);
  set_number(env, obj, "poll", (double)atomic_load(&poll_level));
  set_number(env, obj, "lazyClears", (double)atomic_load(&lazy_clears));
  set_number(env, obj, "lazyClearedBytes", (double)atomic_load(&lazy_cleared_bytes));
  return obj;
}

static napi_value js_set_poll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t level = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &level) != napi_ok || level < 0 || level > 100) {
    napi_throw_range_error(env, NULL, "poll level must be an integer from 0 to 100");
    return NULL;
  }
  atomic_store(&poll_level, level);
  return NULL;
}

static napi_value js_release(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_int32(env, release_pools(), &v);
  return v;
}

/* Hands the C heap's free memory back to the system (glibc keeps freed memory of its arenas resident). */
static napi_value js_trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, malloc_trim(0) == 1, &v);
  return v;
}

/* For the tests: fills a fresh heap buffer of `bytes` (plus an odd offset, so neither end is page-aligned) with
   0xA5, zeroes it with zero_lazily, and says whether that took the lazy path and left every byte zero, and
   whether the bytes just outside the range kept their value. */
static napi_value js_check_lazy_zero(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], obj, v;
  int64_t bytes = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes < 1 || bytes > (1LL << 32)) {
    napi_throw_range_error(env, NULL, "bytes must be from 1 to 2^32");
    return NULL;
  }
  uint8_t *block = malloc((size_t)bytes + 64);
  if (!block) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  uint8_t *base = block + 17;
  memset(block, 0xA5, (size_t)bytes + 64);
  bool lazy = zero_lazily(base, (size_t)bytes);
  if (!lazy) memset(base, 0, (size_t)bytes);
  bool zero = true;
  for (int64_t i = 0; i < bytes && zero; i++) zero = base[i] == 0;
  bool edges = block[16] == 0xA5 && base[bytes] == 0xA5;
  free(block);
  napi_create_object(env, &obj);
  napi_get_boolean(env, lazy, &v);
  napi_set_named_property(env, obj, "lazy", v);
  napi_get_boolean(env, zero, &v);
  napi_set_named_property(env, obj, "zero", v);
  napi_get_boolean(env, edges, &v);
  napi_set_named_property(env, obj, "edgesKept", v);
  return obj;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "stats", NAPI_AUTO_LENGTH, js_stats, NULL, &fn);
  napi_set_named_property(env, exports, "stats", fn);
  napi_create_function(env, "setPoll", NAPI_AUTO_LENGTH, js_set_poll, NULL, &fn);
  napi_set_named_property(env, exports, "setPoll", fn);
  napi_create_function(env, "trim", NAPI_AUTO_LENGTH, js_trim, NULL, &fn);
  napi_set_named_property(env, exports, "trim", fn);
  napi_create_function(env, "release", NAPI_AUTO_LENGTH, js_release, NULL, &fn);
  napi_set_named_property(env, exports, "release", fn);
  napi_create_function(env, "checkLazyZero", NAPI_AUTO_LENGTH, js_check_lazy_zero, NULL, &fn);
  napi_set_named_property(env, exports, "checkLazyZero", fn);
  return exports;
}
