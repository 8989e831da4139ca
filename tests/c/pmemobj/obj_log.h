/* The pool layout shared by obj_log.c and check_obj_log.c. */
#ifndef OBJ_LOG_H
#define OBJ_LOG_H

#include <stdint.h>
#include <libpmemobj.h>

#define OBJ_LOG_LAYOUT "pmemsim_obj_log"
#define OBJ_LOG_SLOTS 8
#define OBJ_LOG_ITEM_TYPE 1

/* count and the first slots share a cache line: a transaction changes both. */
struct obj_log_root {
	uint64_t count;
	PMEMoid items[OBJ_LOG_SLOTS];
};

struct obj_log_item {
	uint64_t value;
	uint64_t check; /* ~value: a torn or unpersisted item shows */
};

static inline uint64_t obj_log_value(uint64_t i) { return i * 7 + 1; }

#endif
