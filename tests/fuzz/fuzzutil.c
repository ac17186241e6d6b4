/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared plumbing of the fuzz targets; see fuzzutil.h. A fuzz process is
 * one harness: its state (context, directory, fd baseline) lives in the
 * single struct below, set up once and torn down at exit.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream/format.h"
#include "tests/fuzz/fuzzutil.h"

static struct {
	struct wps_ctx *ctx;
	char dir[64];
	int fds;                 /* open fds when the input started */
} fz;

static void quiet(void *arg, int level, const char *msg)
{
}

static void fz_cleanup(void)
{
	DIR *d;
	struct dirent *e;
	char p[320];

	if (fz.dir[0] && (d = opendir(fz.dir))) {
		while ((e = readdir(d)))
			if (e->d_name[0] != '.') {
				snprintf(p, sizeof(p), "%s/%s", fz.dir, e->d_name);
				unlink(p);
			}
		closedir(d);
		rmdir(fz.dir);
	}
	wps_ctx_free(fz.ctx);
}

struct wps_ctx *fz_ctx(void)
{
	if (!fz.ctx) {
		if (wps_ctx_new(&fz.ctx))
			abort();
		wps_ctx_set_log_fn(fz.ctx, quiet, NULL);
		wps_ctx_set_log_level(fz.ctx, WPS_LOG_DEBUG);
		atexit(fz_cleanup);
	}
	return fz.ctx;
}

const char *fz_dir(void)
{
	if (!fz.dir[0]) {
		fz_ctx();   /* registers the cleanup */
		snprintf(fz.dir, sizeof(fz.dir), "%s/wpsfuzz.XXXXXX",
			 access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm");
		if (!mkdtemp(fz.dir))
			abort();
	}
	return fz.dir;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		abort();
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

void fz_begin(void)
{
	fz_ctx();
	fz.fds = count_fds();   /* per input: libFuzzer's own fds vary */
}

void fz_end(void)
{
	int n = count_fds();

	if (n != fz.fds) {
		fprintf(stderr, "fuzz: %d fds open after the input, %d before: "
			"an fd leaked\n", n, fz.fds);
		abort();
	}
}

int fz_memfd(const void *data, size_t len, char *path, size_t plen)
{
	const uint8_t *p = data;
	int fd = memfd_create("wpsfuzz", MFD_CLOEXEC);
	ssize_t k;

	if (fd < 0)
		return -1;
	while (len) {
		k = write(fd, p, len);
		if (k <= 0) {
			close(fd);
			return -1;
		}
		p += k;
		len -= (size_t)k;
	}
	snprintf(path, plen, "/proc/self/fd/%d", fd);
	return fd;
}

int fz_file_memfd(const uint8_t *data, size_t size,
		  void (*fix)(uint8_t *file, size_t len), char *path, size_t plen)
{
	uint8_t *f = malloc(size);
	int fd;

	if (!f)
		abort();
	memcpy(f, data + 1, size - 1);
	if (data[0] & FZ_FIX_CRC)
		fix(f, size - 1);
	fd = fz_memfd(f, size - 1, path, plen);
	free(f);
	if (fd < 0)
		abort();
	return fd;
}

void fz_put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);   /* little-endian host (x86-64) */
}

static uint32_t le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

int fz_sparse_write(int fd, const uint8_t *data, size_t len)
{
	uint64_t size, off;
	size_t n;

	if (len < 5 || ftruncate(fd, 0))
		return -EINVAL;
	size = le32(data + 1);
	if (size > FZ_FILE_MAX)
		size = FZ_FILE_MAX;
	if (ftruncate(fd, (off_t)size))
		return -errno;
	data += 5;
	len -= 5;
	while (len >= 6) {
		off = le32(data);
		n = (size_t)(data[4] | data[5] << 8);
		data += 6;
		len -= 6;
		if (n > len)
			n = len;
		if (off < size && pwrite(fd, data, off + n > size ? size - off : n,
					 (off_t)off) < 0)
			return -errno;
		data += n;
		len -= n;
	}
	return 0;
}

static int put(uint8_t **out, size_t *len, size_t *cap, const void *p,
	       size_t n)
{
	if (*len + n > *cap) {
		size_t c = (*len + n) * 2;
		uint8_t *o = realloc(*out, c);

		if (!o)
			return -ENOMEM;
		*out = o;
		*cap = c;
	}
	memcpy(*out + *len, p, n);
	*len += n;
	return 0;
}

int fz_sparse_encode(int fd, uint8_t flags, uint8_t **out, size_t *len)
{
	uint8_t blk[4096], hdr[6];
	size_t cap = 0, i, j, end;
	struct stat st;
	uint64_t off;
	uint32_t sz;
	ssize_t n;
	int ret;

	*out = NULL;
	*len = 0;
	if (fstat(fd, &st) || (uint64_t)st.st_size > FZ_FILE_MAX)
		return -EFBIG;
	sz = (uint32_t)st.st_size;
	hdr[0] = flags;
	memcpy(hdr + 1, &sz, 4);   /* little-endian host (x86-64) */
	ret = put(out, len, &cap, hdr, 5);
	for (off = 0; !ret && off < sz; off += sizeof(blk)) {
		n = pread(fd, blk, sizeof(blk), (off_t)off);
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		/* runs of non-zero bytes; gaps of fewer than 8 zeros joined */
		for (i = 0; !ret && i < (size_t)n; i = end) {
			while (i < (size_t)n && !blk[i])
				i++;
			if (i == (size_t)n)
				break;
			for (end = i, j = i; j < (size_t)n && j - end < 8; j++)
				if (blk[j])
					end = j + 1;
			uint32_t o = (uint32_t)(off + i);
			uint16_t l = (uint16_t)(end - i);

			memcpy(hdr, &o, 4);
			memcpy(hdr + 4, &l, 2);
			ret = put(out, len, &cap, hdr, 6);
			if (!ret)
				ret = put(out, len, &cap, blk + i, end - i);
		}
	}
	if (ret) {
		free(*out);
		*out = NULL;
	}
	return ret;
}

/* crc32c of [off, off + len) of fd, if that is within size and small
 * enough to be worth it; false otherwise. */
static int crc_range(int fd, uint64_t size, uint64_t off, uint64_t len,
		     uint32_t *crc)
{
	uint8_t buf[65536];
	uint32_t c = 0;
	ssize_t n;

	if (off > size || len > size - off || len > (8u << 20))
		return 0;
	while (len) {
		n = pread(fd, buf, len < sizeof(buf) ? len : sizeof(buf), (off_t)off);
		if (n <= 0)
			return 0;
		c = wps_crc32c(c, buf, (size_t)n);
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	*crc = c;
	return 1;
}

void fz_image_fix_crc(int fd)
{
	struct wps_img_super sb;
	struct wps_img_footer ft;
	struct wps_img_blob_ent be;
	struct stat st;
	uint64_t size, fo, i;
	uint32_t c;

	if (fstat(fd, &st) || pread(fd, &sb, sizeof(sb), 0) != sizeof(sb))
		return;
	size = (uint64_t)st.st_size;
	if (sb.meta_size >= 4096 &&
	    crc_range(fd, size, 4096, sb.meta_size - 4096, &c))
		sb.region_table_crc = c;
	fo = sb.footer_offset;
	if (fo <= size - 4096 && pread(fd, &ft, sizeof(ft), (off_t)fo) == sizeof(ft)) {
		for (i = 0; i < ft.nr_blobs && i < 256; i++) {
			uint64_t at = ft.blob_table_offset + i * sizeof(be);

			if (at > size || size - at < sizeof(be) ||
			    pread(fd, &be, sizeof(be), (off_t)at) != sizeof(be))
				break;
			if (!crc_range(fd, size, be.offset, be.length, &c))
				continue;
			be.crc = c;
			if (pwrite(fd, &be, sizeof(be), (off_t)at) != sizeof(be))
				return;
		}
		if (ft.trailer_offset <= fo &&
		    crc_range(fd, size, ft.trailer_offset, fo - ft.trailer_offset, &c))
			ft.trailer_crc = c;
		ft.crc = wps_crc32c(0, &ft, 4092);
		if (pwrite(fd, &ft, sizeof(ft), (off_t)fo) != sizeof(ft))
			return;
	}
	sb.crc = wps_crc32c(0, &sb, 4092);
	if (pwrite(fd, &sb, sizeof(sb), 0) != sizeof(sb))
		return;
}
