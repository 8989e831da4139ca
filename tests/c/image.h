/* image.h -- a checker's view of a crash image: the whole file, read into memory. */
#ifndef IMAGE_H
#define IMAGE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The file in malloc'd memory and its size, or NULL if unreadable. */
static inline unsigned char *
image_read(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	unsigned char *buf = NULL;
	size_t cap = 0, len = 0, n;
	do {
		if (len == cap) {
			cap = cap ? 2 * cap : 1 << 16;
			unsigned char *grown = realloc(buf, cap);
			if (grown == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = grown;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	*size = len;
	return buf;
}

#endif
