/* check_hashtab.c -- every valid slot of hashtab.c's table is whole. */
#include "image.h"
#include "checker_main.h"

#define MAGIC 0x424154485341482ULL

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

int
check(const char *path)
{
	size_t size = 0;
	uint64_t *w = (uint64_t *)image_read(path, &size);
	if (w == NULL || size < 8192)
		INCONSISTENT("%s: unreadable or short image", path);
	int ok = 1;
	uint64_t bad = 0;
	if (w[0] == MAGIC) {
		uint64_t words = w[1] / 8, n = w[2];
		ok = (w[1] == 64 || w[1] == 128) && n * w[1] <= 8192 - 64;
		for (uint64_t i = 0; ok && i < n; i++) {
			const uint64_t *s = w + 8 + words * i;
			if (words == 16 && s[0] == 1) {
				ok = s[1] != 0 && s[2] == mix(s[1] ^ s[15]);
				for (int j = 0; ok && j < 8; j++)
					ok = s[8 + j] == s[1] * 8 + (uint64_t)j;
			} else if (words == 8 && s[7] == 1) {
				ok = s[0] != 0 && s[6] == mix(s[0] ^ s[5]);
				for (int j = 0; ok && j < 5; j++)
					ok = s[1 + j] == s[0] * 8 + (uint64_t)j;
			}
			bad = i;
		}
	}
	free(w);
	if (!ok)
		INCONSISTENT("slot %llu is valid but not whole", (unsigned long long)bad);
	return 1;
}
