/* check_raw_tail.c -- every published record of raw_tail.c is whole. */
#include "image.h"
#include "checker_main.h"

#define MAGIC 0x4c494154574152ULL
#define SEED 0x9e3779b97f4a7c15ULL

int
check(const char *path)
{
	size_t size = 0;
	uint64_t *w = (uint64_t *)image_read(path, &size);
	int ok = 1;
	if (w == NULL || size < 4096)
		INCONSISTENT("%s: unreadable or short image", path);
	if (w[0] != MAGIC) {
		/* never initialised: nothing may be published */
		ok = w[2] == 0;
	} else if (w[2] > w[1]) {
		ok = 0;
	} else {
		for (uint64_t i = 0; i < w[2] && ok; i++) {
			const uint64_t *r = w + 8 + 4 * i;
			ok = r[0] != 0 && r[2] == (r[0] ^ r[1] ^ SEED);
		}
	}
	uint64_t count = w[2];
	free(w);
	if (!ok)
		INCONSISTENT("a published record is missing or torn (count %llu)",
			     (unsigned long long)count);
	return 1;
}
