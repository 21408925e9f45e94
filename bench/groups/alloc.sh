# bench/groups/alloc.sh - the slab-allocator family against mimalloc
# (mi_malloc/mi_free) and glibc malloc, in one run (bench/alloc.c).
# Every figure is a time per operation or MiB of RSS: lower is better, and
# the ratios hydra/<ref> are Hydra's figure over the reference's.  The
# hydra-direct system is the object cache over mimalloc object by object
# (HY_CACHE_DIRECT); hydra/hydra-direct compares the two slab back ends.
bench_alloc() {
  "$BIN/alloc" all
  return 0
}
