/* kfuse's C API: build a plan from a JSON pipeline spec and run it on
 * caller-owned, contiguous (row-major) buffers. Usable from C, and from
 * Fortran through ISO_C_BINDING (examples/fortran/kfuse_example.f90).
 *
 *   kfuse_init();
 *   kfuse_plan plan;
 *   if (kfuse_plan_create(json, NULL, 0, &plan) != KFUSE_OK) puts(kfuse_last_error());
 *   kfuse_plan_run(plan, x, sizeof x, out, sizeof out);
 *   kfuse_plan_destroy(plan);
 *   kfuse_finalize();
 *
 * Every function returns a kfuse_status; on failure kfuse_last_error() gives
 * the message (per thread, until the next kfuse call on that thread). No C++
 * exception ever crosses this API. A plan may be run from several threads at
 * once. Destroy every plan before kfuse_finalize().
 *
 * Calls are checked, not trusted: every buffer kfuse writes comes with its
 * size, and a plan handle is looked up among the live plans, so a destroyed
 * plan (a second destroy included), a handle kfuse did not make and a short
 * buffer are KFUSE_INVALID_ARGUMENT, not memory corruption.
 */
#ifndef KFUSE_KFUSE_H
#define KFUSE_KFUSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes; the non-zero ones mirror kfuse::ErrorCategory. */
typedef enum kfuse_status {
  KFUSE_OK = 0,
  KFUSE_INVALID_ARGUMENT = 1, /* a parameter outside its domain, a NULL pointer */
  KFUSE_SHAPE_MISMATCH = 2,   /* shapes that do not fit together */
  KFUSE_UNSUPPORTED = 3,      /* valid, but not handled (strategy, backend, dtype) */
  KFUSE_OVERFLOW = 4,         /* sizes past 64 bits */
  KFUSE_IO = 5,               /* files (.npy, spec files) */
  KFUSE_SPEC = 6,             /* malformed JSON pipeline spec */
  KFUSE_BACKEND = 7,          /* a device runtime call failed */
  KFUSE_INTERNAL = 8          /* anything else (out of memory, a bug) */
} kfuse_status;

/* Element types, as kfuse_plan_dtype reports them. */
typedef enum kfuse_dtype {
  KFUSE_FLOAT32 = 0,
  KFUSE_FLOAT64 = 1,
  KFUSE_FLOAT16 = 2,
  KFUSE_BFLOAT16 = 3
} kfuse_dtype;

#define KFUSE_MAX_RANK 8

typedef struct kfuse_plan_s* kfuse_plan;

/* The library's version, e.g. "0.1.0". */
const char* kfuse_version(void);

/* Initialises Kokkos unless the application already has; kfuse_finalize
 * finalises only what kfuse_init started. kfuse_finalize fails with
 * KFUSE_INVALID_ARGUMENT while plans are alive. */
kfuse_status kfuse_init(void);
kfuse_status kfuse_finalize(void);

/* Builds a plan from a JSON spec given as text (relative .npy paths in it are
 * resolved against the working directory). strategy: NULL or "auto", "fold",
 * "fused_conv", "fused", "reference". on_device: non-zero for inputs and outputs in CUDA
 * memory. A plan that no backend can run (float16/bfloat16 in host memory)
 * is refused here, KFUSE_UNSUPPORTED. */
kfuse_status kfuse_plan_create(const char* json_spec, const char* strategy, int on_device, kfuse_plan* out);
/* The same from a spec file (relative .npy paths against the file's directory). */
kfuse_status kfuse_plan_create_from_file(const char* path, const char* strategy, int on_device, kfuse_plan* out);
/* NULL is accepted and ignored; a handle that is not a live plan is
 * KFUSE_INVALID_ARGUMENT. */
kfuse_status kfuse_plan_destroy(kfuse_plan plan);

/* Shapes: *rank receives the rank; dims (room for max_rank entries, or NULL
 * to ask for the rank only) receives the extents. A dims shorter than the
 * rank is KFUSE_INVALID_ARGUMENT, with *rank set. KFUSE_MAX_RANK is always
 * enough. */
kfuse_status kfuse_plan_input_shape(kfuse_plan plan, int64_t* dims, int max_rank, int* rank);
kfuse_status kfuse_plan_output_shape(kfuse_plan plan, int64_t* dims, int max_rank, int* rank);
/* Element counts of the input and output. */
kfuse_status kfuse_plan_input_numel(kfuse_plan plan, int64_t* numel);
kfuse_status kfuse_plan_output_numel(kfuse_plan plan, int64_t* numel);
/* The element type of input and output (a kfuse_dtype value). */
kfuse_status kfuse_plan_dtype(kfuse_plan plan, int* dtype);

/* Runs the plan: x holds the input, out receives the output, both contiguous
 * row-major buffers of the plan's dtype, in host memory (or CUDA memory for a
 * plan created with on_device), of x_bytes and out_bytes bytes: at least
 * numel times the dtype's size (4 for float32), else KFUSE_INVALID_ARGUMENT
 * and nothing is written. Returns when out is written. */
kfuse_status kfuse_plan_run(kfuse_plan plan, const void* x, size_t x_bytes, void* out, size_t out_bytes);

/* What the planner chose and why, and the cost (multiply-adds, bytes, where
 * it runs, an estimate per run on the host); the string lives as long as the
 * plan. NULL (with kfuse_last_error set) for a handle that is not a live plan. */
const char* kfuse_plan_describe(kfuse_plan plan);
/* The fewest bytes the pipeline must move (input, weights, output). */
kfuse_status kfuse_plan_floor_bytes(kfuse_plan plan, int64_t* bytes);

/* The message of the last failed call on this thread ("" when the last call
 * succeeded). The pointer stays valid until the next kfuse call on this thread. */
const char* kfuse_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* KFUSE_KFUSE_H */
