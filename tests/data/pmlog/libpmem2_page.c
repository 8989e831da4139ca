/* libpmem2 at PAGE granularity (no DAX here): memcpy, a store, persist (msync) and a deep
 * flush, recorded with PMREORDER_EMIT_LOG=1 so that libpmem2 logs its own markers. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libpmem2.h>

int main(int argc, char **argv) {
	int gran = argc > 2 ? atoi(argv[2]) : 0;
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 8192)) return 1;
	struct pmem2_config *cfg; struct pmem2_source *src; struct pmem2_map *map;
	pmem2_config_new(&cfg);
	pmem2_config_set_required_store_granularity(cfg, gran ? PMEM2_GRANULARITY_PAGE : PMEM2_GRANULARITY_CACHE_LINE);
	pmem2_source_from_fd(&src, fd);
	if (pmem2_map_new(&map, cfg, src)) { pmem2_perror("map"); return 1; }
	char *addr = pmem2_map_get_address(map);
	pmem2_memcpy_fn memcpy_fn = pmem2_get_memcpy_fn(map);
	pmem2_persist_fn persist = pmem2_get_persist_fn(map);
	memcpy_fn(addr + 100, "hello world, this is a record", 30, 0);
	*(long *)(addr + 8) = 1;
	persist(addr + 8, 8);
	pmem2_deep_flush(map, addr, 64);
	pmem2_map_delete(&map);
	pmem2_source_delete(&src);
	pmem2_config_delete(&cfg);
	close(fd);
	return 0;
}
