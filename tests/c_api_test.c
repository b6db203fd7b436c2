/* The C API from plain C (C99): plan creation, shapes, runs against the
 * reference strategy, and every error path returning a status and a message:
 * short buffers, destroyed and foreign handles, deep JSON and plans no
 * backend can run are refused, not crashes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kfuse/kfuse.h"

static int failures = 0;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, kfuse_last_error());                                            \
      ++failures;                                                                    \
    }                                                                                \
  } while (0)

static const char* kSpec =
    "{\"name\": \"c_api\","
    " \"input\": {\"shape\": [2, 4, 9, 9], \"init\": {\"kind\": \"uniform\", \"seed\": 0}},"
    " \"ops\": ["
    "  {\"op\": \"conv_transpose2d\", \"weight\": {\"shape\": [4, 8, 3, 3], \"init\": {\"kind\": \"conv_default\", \"seed\": 1}},"
    "   \"bias\": {\"shape\": [8], \"init\": {\"kind\": \"conv_default\", \"seed\": 2}}, \"stride\": 2, \"padding\": 1},"
    "  {\"op\": \"mean\", \"axes\": [2, 3], \"keepdim\": true},"
    "  {\"op\": \"add\", \"tensor\": {\"shape\": [8, 1, 1], \"init\": {\"kind\": \"randn\", \"seed\": 3}}},"
    "  {\"op\": \"logsumexp\", \"axes\": [1], \"keepdim\": true},"
    "  {\"op\": \"sum\", \"axes\": [2, 3]},"
    "  {\"op\": \"mul\", \"scalar\": 10.0}]}";

static const char* kNoFold =
    "{\"input\": {\"shape\": [2, 3, 5, 5], \"init\": {\"kind\": \"uniform\", \"seed\": 0}},"
    " \"ops\": [{\"op\": \"conv_transpose2d\", \"weight\": {\"shape\": [3, 4, 3, 3], \"init\": {\"kind\": \"conv_default\", \"seed\": 1}}},"
    "  {\"op\": \"relu\"}, {\"op\": \"softmax\", \"axis\": 1}]}";

static const char* kHalf =
    "{\"input\": {\"shape\": [1, 2, 3, 3], \"dtype\": \"bfloat16\", \"init\": {\"kind\": \"uniform\", \"seed\": 0}},"
    " \"ops\": [{\"op\": \"conv_transpose2d\", \"weight\": {\"shape\": [2, 2, 3, 3], \"init\": {\"kind\": \"conv_default\", \"seed\": 1}}},"
    "  {\"op\": \"relu\"}, {\"op\": \"softmax\", \"axis\": 1}]}";

int main(void) {
  kfuse_plan plan = NULL, ref = NULL, other = NULL;
  int64_t dims[KFUSE_MAX_RANK];
  int rank = -1, dtype = -1;
  int64_t n_in = 0, n_out = 0, floor_bytes = 0;

  CHECK(kfuse_version() != NULL && strlen(kfuse_version()) > 0);

  /* Before kfuse_init: a clear error, not a crash. */
  CHECK(kfuse_plan_create(kSpec, NULL, 0, &plan) == KFUSE_INVALID_ARGUMENT);
  CHECK(plan == NULL);
  CHECK(strstr(kfuse_last_error(), "kfuse_init") != NULL);

  CHECK(kfuse_init() == KFUSE_OK);
  CHECK(strcmp(kfuse_last_error(), "") == 0);

  /* Argument errors. */
  CHECK(kfuse_plan_create(kSpec, NULL, 0, NULL) == KFUSE_INVALID_ARGUMENT);
  CHECK(kfuse_plan_create(NULL, NULL, 0, &plan) == KFUSE_INVALID_ARGUMENT);
  CHECK(strlen(kfuse_last_error()) > 0);
  CHECK(kfuse_plan_create(kSpec, "bogus", 0, &plan) == KFUSE_INVALID_ARGUMENT);
  CHECK(strstr(kfuse_last_error(), "bogus") != NULL);
  CHECK(kfuse_plan_input_shape(NULL, dims, KFUSE_MAX_RANK, &rank) == KFUSE_INVALID_ARGUMENT);
  CHECK(kfuse_plan_run(NULL, NULL, 0, NULL, 0) == KFUSE_INVALID_ARGUMENT);
  CHECK(kfuse_plan_describe(NULL) == NULL);
  CHECK(kfuse_plan_destroy(NULL) == KFUSE_OK);

  /* Spec errors carry the JSON path. */
  CHECK(kfuse_plan_create("{\"input\": 1}", NULL, 0, &plan) == KFUSE_SPEC);
  CHECK(strncmp(kfuse_last_error(), "spec: /input: ", 14) == 0);
  CHECK(kfuse_plan_create("not json", NULL, 0, &plan) == KFUSE_SPEC);
  CHECK(plan == NULL);
  CHECK(kfuse_plan_create_from_file("/nonexistent/spec.json", NULL, 0, &plan) == KFUSE_IO);
  CHECK(strstr(kfuse_last_error(), "/nonexistent/spec.json") != NULL);

  /* Nesting deep enough to overflow a recursive walk: a spec error. */
  {
    const int depth = 100000;
    char* deep = (char*)malloc(2 * depth + 16);
    int i, n = 0;
    n += sprintf(deep, "{\"name\": ");
    for (i = 0; i < depth; ++i) deep[n++] = '[';
    for (i = 0; i < depth; ++i) deep[n++] = ']';
    strcpy(deep + n, "}");
    CHECK(kfuse_plan_create(deep, NULL, 0, &plan) == KFUSE_SPEC);
    CHECK(strstr(kfuse_last_error(), "nested more than") != NULL);
    CHECK(plan == NULL);
    free(deep);
  }

  /* A bfloat16 plan in host memory: no backend runs it, refused when made. */
  CHECK(kfuse_plan_create(kHalf, NULL, 0, &other) == KFUSE_UNSUPPORTED);
  CHECK(strstr(kfuse_last_error(), "CUDA backend") != NULL);
  CHECK(other == NULL);

  /* A forced strategy that cannot apply. */
  CHECK(kfuse_plan_create(kNoFold, "fold", 0, &other) != KFUSE_OK);
  CHECK(other == NULL);
  CHECK(strlen(kfuse_last_error()) > 0);

  /* Device plans: fine with CUDA, an error (not a crash) without. */
  if (kfuse_plan_create(kSpec, NULL, 1, &other) == KFUSE_OK) {
    CHECK(kfuse_plan_destroy(other) == KFUSE_OK);
  } else {
    CHECK(strlen(kfuse_last_error()) > 0);
  }
  other = NULL;

  /* A real plan and its reference. */
  CHECK(kfuse_plan_create(kSpec, NULL, 0, &plan) == KFUSE_OK);
  CHECK(kfuse_plan_create(kSpec, "reference", 0, &ref) == KFUSE_OK);
  if (!plan || !ref) {
    fprintf(stderr, "cannot continue: %s\n", kfuse_last_error());
    return 1;
  }
  CHECK(kfuse_plan_input_shape(plan, dims, KFUSE_MAX_RANK, &rank) == KFUSE_OK);
  CHECK(rank == 4 && dims[0] == 2 && dims[1] == 4 && dims[2] == 9 && dims[3] == 9);
  CHECK(kfuse_plan_output_shape(plan, NULL, 0, &rank) == KFUSE_OK && rank == 2);
  CHECK(kfuse_plan_output_shape(plan, dims, KFUSE_MAX_RANK, &rank) == KFUSE_OK);
  CHECK(rank == 2 && dims[0] == 2 && dims[1] == 1);
  CHECK(kfuse_plan_input_shape(plan, dims, KFUSE_MAX_RANK, NULL) == KFUSE_INVALID_ARGUMENT);
  /* dims too short for the rank: refused, nothing written past it, the rank told. */
  dims[3] = -7;
  rank = -1;
  CHECK(kfuse_plan_input_shape(plan, dims, 3, &rank) == KFUSE_INVALID_ARGUMENT);
  CHECK(rank == 4 && dims[3] == -7);
  CHECK(strstr(kfuse_last_error(), "room for 3") != NULL);
  CHECK(kfuse_plan_dtype(plan, &dtype) == KFUSE_OK && dtype == KFUSE_FLOAT32);
  CHECK(kfuse_plan_input_numel(plan, &n_in) == KFUSE_OK && n_in == 2 * 4 * 9 * 9);
  CHECK(kfuse_plan_output_numel(plan, &n_out) == KFUSE_OK && n_out == 2);
  CHECK(kfuse_plan_floor_bytes(plan, &floor_bytes) == KFUSE_OK && floor_bytes >= n_in * 4);
  CHECK(kfuse_plan_describe(plan) != NULL && strstr(kfuse_plan_describe(plan), "strategy") != NULL);
  CHECK(strstr(kfuse_plan_describe(plan), "multiply-adds") != NULL);
  CHECK(strstr(kfuse_plan_describe(ref), "reference") != NULL);

  {
    float* x = (float*)malloc((size_t)n_in * sizeof(float));
    float out[2] = {0, 0}, out_ref[2] = {0, 0}, out_short[2] = {5, 5};
    const size_t x_bytes = (size_t)n_in * sizeof(float);
    double num = 0, den = 0;
    int64_t i;
    unsigned s = 12345u;
    for (i = 0; i < n_in; ++i) {
      s = s * 1103515245u + 12345u;
      x[i] = (float)((s >> 8) & 0xffff) / 65536.0f;
    }
    CHECK(kfuse_plan_run(plan, x, x_bytes, out, sizeof out) == KFUSE_OK);
    CHECK(kfuse_plan_run(ref, x, x_bytes, out_ref, sizeof out_ref) == KFUSE_OK);
    for (i = 0; i < 2; ++i) {
      num += (out[i] - out_ref[i]) * (double)(out[i] - out_ref[i]);
      den += out_ref[i] * (double)out_ref[i];
      CHECK(isfinite(out[i]));
    }
    printf("c_api: out = %.7g %.7g, reference = %.7g %.7g, relative error %.3g\n", out[0], out[1], out_ref[0],
           out_ref[1], sqrt(num / den));
    CHECK(den > 0 && sqrt(num / den) < 1e-5);
    CHECK(kfuse_plan_run(plan, NULL, x_bytes, out, sizeof out) == KFUSE_INVALID_ARGUMENT);
    CHECK(kfuse_plan_run(plan, x, x_bytes, NULL, sizeof out) == KFUSE_INVALID_ARGUMENT);
    /* Short buffers: refused before anything is read or written. */
    CHECK(kfuse_plan_run(plan, x, x_bytes, out_short, sizeof(float)) == KFUSE_INVALID_ARGUMENT);
    CHECK(strstr(kfuse_last_error(), "out_bytes (4)") != NULL && strstr(kfuse_last_error(), "8 bytes") != NULL);
    CHECK(out_short[0] == 5 && out_short[1] == 5);
    CHECK(kfuse_plan_run(plan, x, x_bytes - 1, out_short, sizeof out_short) == KFUSE_INVALID_ARGUMENT);
    CHECK(strstr(kfuse_last_error(), "x_bytes") != NULL);
    CHECK(out_short[0] == 5 && out_short[1] == 5);
    free(x);
  }

  /* Finalizing with live plans is refused; after destroying them it works. */
  CHECK(kfuse_finalize() == KFUSE_INVALID_ARGUMENT);
  CHECK(strstr(kfuse_last_error(), "still alive") != NULL);
  CHECK(kfuse_plan_destroy(plan) == KFUSE_OK);
  CHECK(kfuse_plan_destroy(ref) == KFUSE_OK);

  /* Destroyed and foreign handles: errors, never dereferenced. */
  CHECK(kfuse_plan_destroy(plan) == KFUSE_INVALID_ARGUMENT);
  CHECK(strstr(kfuse_last_error(), "not a live plan") != NULL);
  CHECK(kfuse_plan_run(plan, NULL, 0, NULL, 0) == KFUSE_INVALID_ARGUMENT);
  CHECK(kfuse_plan_describe(ref) == NULL);
  CHECK(kfuse_plan_dtype(ref, &dtype) == KFUSE_INVALID_ARGUMENT);
  {
    static double not_a_plan[16];
    kfuse_plan garbage = (kfuse_plan)(void*)not_a_plan, wild = (kfuse_plan)(uintptr_t)0xdeadbeefu;
    CHECK(kfuse_plan_output_numel(garbage, &n_out) == KFUSE_INVALID_ARGUMENT);
    CHECK(kfuse_plan_floor_bytes(wild, &floor_bytes) == KFUSE_INVALID_ARGUMENT);
    CHECK(kfuse_plan_destroy(wild) == KFUSE_INVALID_ARGUMENT);
  }
  CHECK(kfuse_finalize() == KFUSE_OK);

  if (failures) {
    fprintf(stderr, "c_api_test: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
