// ESLint: typescript-eslint's recommended rules on every file, plus the type-checked rules that
// catch real bugs in async daemon code at a bearable cost. CPU time for src, test, bench, scripts:
// untyped 11 s, with these typed rules 33 s, all of recommendedTypeChecked 42 s (and 386 findings
// of no-unnecessary-type-assertion: the `!` written for noUncheckedIndexedAccess, which tsconfig
// does not set). Formatting is prettier's job (.prettierrc.json); the only layout rule here is the
// line limit prettier cannot enforce.
import js from '@eslint/js';
import stylistic from '@stylistic/eslint-plugin';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores(['build/', 'node_modules/', 'bench/results/', 'docs/', 'installers/']),
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: { globals: globals.node },
    rules: {
      // `const { dropped: _x, ...rest } = o` is how a field is left out of a copy (tsc agrees).
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
    },
  },
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // A promise nobody awaits loses its rejection: a verdict, a journal write or a save that
      // failed in silence. node:test's describe/it are awaited by the runner itself.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }] },
      ],
      // Only promise-returning callbacks passed where a void one is expected (emitter.on, timers):
      // their rejections are unhandled and end the process. The other checks cost ~8 s more CPU
      // (the whole rule doubled the typed pass) for one false positive in the tree.
      '@typescript-eslint/no-misused-promises': [
        'error',
        {
          checksVoidReturn: {
            arguments: true,
            attributes: false,
            inheritedMethods: false,
            properties: false,
            returns: false,
            variables: false,
          },
        },
      ],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      // Passing on a caught value unchanged is a rethrow, not a new non-Error rejection.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/no-base-to-string': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
    },
  },
  {
    // The web console's pages run in the browser (served as ES modules, no build step).
    files: ['src/svm/console/static/**/*.js'],
    languageOptions: { globals: globals.browser, sourceType: 'module' },
  },
  {
    files: ['src/**/*.ts', 'scripts/**/*.mjs', 'src/svm/console/static/**/*.js'],
    plugins: { '@stylistic': stylistic },
    rules: {
      // prettier breaks code at printWidth but never strings or comments; this catches those.
      '@stylistic/max-len': ['error', { code: 140, tabWidth: 2, ignoreUrls: true }],
    },
  },
);
