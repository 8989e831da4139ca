/*
 * pmem2_kv.c -- a small key-value array on libpmem2: slots are written with the map's memcpy
 * function and published by persisting a count with its persist function.
 *
 * Page 0 holds the header (magic, count); 256-byte slots start at page 1, so a slot and the
 * count it is published by are never in one page. Run on a plain file the map has PAGE
 * granularity (persist is msync); PMEM2_FORCE_GRANULARITY=CACHE_LINE makes libpmem2 flush
 * with cache-line flushes instead. PMREORDER_EMIT_LOG=1 makes libpmem2 wrap its calls in
 * markers (pmem2_memmove.BEGIN|libpmem2.BEGIN|...).
 *
 *   pmem2_kv bug|fixed POOL
 *
 * bug: slots are copied with PMEM2_F_MEM_NOFLUSH (the author meant to flush them later) and
 * the count is persisted over them.
 * fixed: slots are copied with flags 0 (flushed and drained) before the count is persisted.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpmem2.h>

#define PAGE 4096
#define POOL_SIZE (3 * PAGE)
#define MAGIC 0x564b324d454d50ULL /* "PMEM2KV" */
#define NSLOTS (2 * PAGE / 256)

struct header {
	uint64_t magic;
	uint64_t count;
};

struct slot {
	uint64_t key;
	uint64_t len;
	uint64_t sum;
	uint64_t unused;
	char value[224];
};

static struct pmem2_map *map;
static pmem2_persist_fn persist;
static pmem2_memcpy_fn copy;

static void
die(const char *what)
{
	pmem2_perror("%s", what);
	exit(2);
}

static void *
open_pool(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, POOL_SIZE) != 0) {
		perror(path);
		exit(2);
	}
	struct pmem2_config *cfg;
	struct pmem2_source *src;
	if (pmem2_config_new(&cfg) || pmem2_source_from_fd(&src, fd))
		die("pmem2 config/source");
	if (pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE))
		die("pmem2_config_set_required_store_granularity");
	if (pmem2_map_new(&map, cfg, src))
		die("pmem2_map_new");
	pmem2_source_delete(&src);
	pmem2_config_delete(&cfg);
	close(fd);
	persist = pmem2_get_persist_fn(map);
	copy = pmem2_get_memcpy_fn(map);
	return pmem2_map_get_address(map);
}

static uint64_t
slot_sum(const struct slot *s)
{
	uint64_t h = s->key * 0x100000001b3ULL + s->len;
	for (uint64_t i = 0; i < s->len; i++)
		h = (h ^ (unsigned char)s->value[i]) * 0x100000001b3ULL;
	return h;
}

static void
put(char *base, uint64_t i, const char *value, int fixed)
{
	struct header *h = (struct header *)base;
	struct slot *dst = (struct slot *)(base + PAGE) + i;
	struct slot s;
	memset(&s, 0, sizeof(s));
	s.key = i + 1;
	s.len = strlen(value);
	memcpy(s.value, value, s.len);
	s.sum = slot_sum(&s);
	copy(dst, &s, sizeof(s), fixed ? 0 : PMEM2_F_MEM_NOFLUSH); /* LOST: pmem2_kv slot copy */
	h->count = i + 1;
	persist(&h->count, sizeof(h->count));
}

int
main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s bug|fixed POOL\n", argv[0]);
		return 2;
	}
	int fixed = strcmp(argv[1], "fixed") == 0;
	char *base = open_pool(argv[2]);
	struct header *h = (struct header *)base;
	h->magic = MAGIC;
	persist(&h->magic, sizeof(h->magic));
	put(base, 0, "alpha", fixed);
	put(base, 1, "a value long enough to span two cache lines of its slot, "
		     "so that a slot can tear",
	    fixed);
	if (pmem2_deep_flush(map, base, POOL_SIZE))
		die("pmem2_deep_flush");
	pmem2_map_delete(&map);
	return 0;
}
