/* split_ptr POOL: make a table live, then rebuild: the new table in tmp, the old one freed
 * (the pointer cleared), the pointer set to the new one, tmp cleared; hashmap_atomic.c's
 * hm_atomic_rebuild_finish in a few lines. With -DFIXED the pointer's tag is persisted
 * before its offset, so a pointer that is not null always has its tag. */
#include <fcntl.h>
#include <stdio.h>
#include <libpmem2.h>
#include "split_ptr.h"

int main(int argc, char **argv)
{
	struct pmem2_config *cfg;
	struct pmem2_source *src;
	struct pmem2_map *map;
	int fd = argc == 2 ? open(argv[1], O_RDWR) : -1;
	if (fd < 0 || pmem2_config_new(&cfg) || pmem2_source_from_fd(&src, fd) ||
	    pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) ||
	    pmem2_map_new(&map, cfg, src)) {
		fprintf(stderr, "usage: split_ptr POOL (an existing file of 4 KiB or more)\n");
		return 1;
	}
	pmem2_persist_fn persist = pmem2_get_persist_fn(map);
	struct root *r = pmem2_map_get_address(map);

	r->table.tag = TAG; /* the first table, tag before offset */
	persist(&r->table.tag, 8);
	r->table.off = 0x100;
	persist(&r->table.off, 8);

	r->tmp.tag = TAG; /* the rebuild's new table */
	r->tmp.off = 0x200;
	persist(&r->tmp, sizeof(r->tmp));
	r->table.off = 0; /* the old table freed: the pointer null, then untagged */
	persist(&r->table.off, 8);
	r->table.tag = 0;
	persist(&r->table.tag, 8);
#ifdef FIXED
	r->table.tag = r->tmp.tag;
	persist(&r->table.tag, 8);
	r->table.off = r->tmp.off;
	persist(&r->table.off, 8);
#else
	r->table.tag = r->tmp.tag; /* LOST: the tag's line may persist after the offset's */
	r->table.off = r->tmp.off;
	persist(&r->table, sizeof(r->table));
#endif
	r->tmp.off = 0;
	persist(&r->tmp.off, 8);
	return 0;
}
