/* check_pmem2_kv.c -- every slot pmem2_kv.c published is whole. */
#include "image.h"
#include "checker_main.h"

#define MAGIC 0x564b324d454d50ULL

int
check(const char *path)
{
	size_t size = 0;
	unsigned char *img = image_read(path, &size);
	if (img == NULL || size < 3 * 4096)
		INCONSISTENT("%s: unreadable or short image", path);
	const uint64_t *h = (const uint64_t *)img;
	int ok = 1;
	if (h[0] != MAGIC) {
		ok = h[1] == 0;
	} else {
		ok = h[1] <= 2 * 4096 / 256;
		for (uint64_t i = 0; ok && i < h[1]; i++) {
			const unsigned char *s = img + 4096 + 256 * i;
			const uint64_t *sw = (const uint64_t *)s;
			uint64_t len = sw[1];
			ok = sw[0] == i + 1 && len <= 224;
			uint64_t sum = sw[0] * 0x100000001b3ULL + len;
			for (uint64_t j = 0; ok && j < len; j++)
				sum = (sum ^ s[32 + j]) * 0x100000001b3ULL;
			ok = ok && sum == sw[2];
		}
	}
	free(img);
	if (!ok)
		INCONSISTENT("a published slot is missing or torn");
	return 1;
}
