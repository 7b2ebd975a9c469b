// Lint: typescript-eslint's type-aware recommended rules on the server's code; the tests and the bench harness get
// the same rules without those that only fight their deliberate looseness (JSON read back from the server, `any`
// from the test runner). Formatting is Prettier's (.prettierrc.json); eslint-config-prettier turns off the rules
// that would disagree with it.
import js from "@eslint/js";
import prettier from "eslint-config-prettier";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "data/", "native/ggml-pool/build/", "bench/results/", "**/*.tmp.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      // src is checked as it is built: with noUncheckedIndexedAccess (tsconfig.json).
      parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Promises are awaited or handed on; one left floating is a bug (an unhandled rejection, a race).
      // node:test's describe() and test() return promises the runner awaits itself.
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["describe", "test", "it", "suite"] },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": [
        "error",
        { checksVoidReturn: { arguments: false, attributes: false } },
      ],
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" },
      ],
      // Numbers and other plain values in template strings are how messages are written here.
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        { allowNumber: true, allowBoolean: true, allowNullish: true },
      ],
      // Fastify handlers and interface implementations are async by contract, awaiting or not.
      "@typescript-eslint/require-await": "off",
      // An abort signal's reason is whatever the aborter gave: it is passed on as it is.
      "@typescript-eslint/prefer-promise-reject-errors": ["error", { allowThrowingUnknown: true }],
    },
  },
  {
    files: ["test/**/*.ts", "bench/**/*.ts"],
    languageOptions: { parserOptions: { project: "./tsconfig.test.json", tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/no-non-null-assertion": "off",
      // Assertion messages interpolate whatever they show.
      "@typescript-eslint/restrict-template-expressions": "off",
      "@typescript-eslint/restrict-plus-operands": "off",
      "@typescript-eslint/no-unsafe-enum-comparison": "off",
      "@typescript-eslint/unbound-method": "off",
    },
  },
  {
    // The web console's front-end: browser code, checked against the DOM's types (web/tsconfig.json).
    files: ["web/**/*.ts", "web/**/*.tsx"],
    languageOptions: { parserOptions: { project: "./web/tsconfig.json", tsconfigRootDir: import.meta.dirname } },
  },
  {
    files: ["**/*.js", "**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: "readonly", console: "readonly" },
    },
  },
  prettier,
);
