#ifndef MOEPRESS_CBLAS_SHIM_H
#define MOEPRESS_CBLAS_SHIM_H
#include <cblas.h>    // OpenBLAS cblas + openblas_set_num_threads
#include <lapacke.h>  // from liblapacke-dev (Debian's OpenBLAS is built without LAPACKE)
#include <malloc.h>   // mallopt: glibc allocator tuning for the compute runtime (not exported by Swift's Glibc module)
#endif
