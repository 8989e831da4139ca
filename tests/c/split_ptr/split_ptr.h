/* A root whose 16-byte pointer straddles two cache lines, as the bucket pointer of PMDK's
 * hashmap_atomic example did in a libpmemobj pool (its pool id at +0x38 of one line, its
 * offset at +0x0 of the next). */
#include <stdint.h>

#define TAG 0x5450524cU /* "LRPT": the pool's id in a pointer (PMEMoid.pool_uuid_lo) */

struct ptr {
	uint64_t tag; /* 0 in a freed pointer */
	uint64_t off; /* 0 in a null pointer: the only field a null test looks at */
};

struct root {
	uint8_t pad[0x38];
	struct ptr table; /* the live table: +0x38 (tag) and +0x40 (off) */
	struct ptr tmp;   /* the table a rebuild moves to, until it is live */
};
