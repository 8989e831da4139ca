/* check_raw_flag.c -- when raw_flag.c's flag is set, the text matches its checksum. */
#include "image.h"
#include "checker_main.h"

int
check(const char *path)
{
	size_t size = 0;
	unsigned char *img = image_read(path, &size);
	if (img == NULL || size < 4096)
		INCONSISTENT("%s: unreadable or short image", path);
	const uint64_t *w = (const uint64_t *)img;
	int ok = 1;
	if (w[0] == 1) {
		uint64_t len = w[1];
		ok = len > 0 && len <= 4096 - 64;
		uint64_t s = 1469598103934665603ULL;
		for (uint64_t i = 0; ok && i < len; i++)
			s = (s ^ img[64 + i]) * 1099511628211ULL;
		ok = ok && s == w[2];
	} else if (w[0] != 0) {
		ok = 0;
	}
	free(img);
	if (!ok)
		INCONSISTENT("the flag is set but the text does not match its checksum");
	return 1;
}
