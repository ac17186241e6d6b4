/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: instant live snapshots of guest RAM with userfaultfd
 * write-protection.
 *
 * Conventions: every function that can fail returns 0 or a negative errno;
 * the detail of a failure is logged through the context's log function
 * before the call returns, so a caller that only prints strerror(-ret) still
 * leaves the user a message that names the file, range or feature at fault.
 */
#ifndef WPSNAP_WPSNAP_H
#define WPSNAP_WPSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WPSNAP_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ */
/* Context and logging                                                 */
/* ------------------------------------------------------------------ */

struct wps_ctx;

enum wps_log_level {
	WPS_LOG_ERR = 3,
	WPS_LOG_WARN = 4,
	WPS_LOG_INFO = 6,
	WPS_LOG_DEBUG = 7,
};

/* Receives one formatted message, without a trailing newline. */
typedef void (*wps_log_fn)(void *arg, int level, const char *msg);

/*
 * A context holds what would otherwise be global: the log level and sink.
 * The default sink prints "wpsnap: <msg>" to stderr; the default level is
 * WPS_LOG_WARN, or the value of $WPSNAP_LOG (err|warn|info|debug).
 * A context may be shared by threads; it must outlive every object made
 * with it.
 */
int wps_ctx_new(struct wps_ctx **out);
void wps_ctx_free(struct wps_ctx *ctx);
void wps_ctx_set_log_level(struct wps_ctx *ctx, int level);
int wps_ctx_get_log_level(const struct wps_ctx *ctx);
void wps_ctx_set_log_fn(struct wps_ctx *ctx, wps_log_fn fn, void *arg);

/* ------------------------------------------------------------------ */
/* Guest RAM description                                               */
/* ------------------------------------------------------------------ */

enum wps_backing {
	WPS_BACKING_ANON = 1,    /* private anonymous memory (THP or not) */
	WPS_BACKING_MEMFD = 2,   /* memfd / shmem, MAP_SHARED */
	WPS_BACKING_HUGETLB = 3, /* hugetlbfs (memfd MFD_HUGETLB or MAP_HUGETLB) */
};

/*
 * One contiguous range of guest RAM. host_addr is an address in the
 * process that owns the userfaultfd (the caller, for in-process snapshots).
 * host_addr and size must be multiples of page_size; page_size is 4096 for
 * anon and memfd, the huge page size for hugetlb. Regions may not overlap.
 * fd is the memfd behind a MEMFD or HUGETLB region (or -1 if unknown);
 * with it, pages that sit in the file but are not mapped in the page
 * tables at the freeze are still saved. The library never closes it.
 */
struct wps_region {
	uint64_t host_addr;
	uint64_t size;
	uint32_t page_size;
	uint32_t backing;   /* enum wps_backing */
	int fd;
	uint64_t fd_offset;
	const char *name;   /* optional; at most 31 bytes are stored */
	/*
	 * Where the caller can read the region, when the guest RAM belongs
	 * to another process (wps_snapshot_opts.pid): NULL makes the library
	 * map fd itself (read-only, shared). Ignored for pid 0, where
	 * host_addr is read directly.
	 */
	const void *local;
};

#define WPS_REGION_NAME_MAX 31

/* Validate a region table: -EINVAL with a logged reason when a region is
 * unaligned, empty, of an unknown backing, or overlaps another. */
int wps_regions_check(struct wps_ctx *ctx, const struct wps_region *regions,
		      unsigned int nr);

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

struct wps_snapshot;

enum wps_phase {
	WPS_PHASE_NEW = 0,
	WPS_PHASE_FREEZING,
	WPS_PHASE_COPYING,
	WPS_PHASE_PUBLISHING,
	WPS_PHASE_DONE,
	WPS_PHASE_FAILED,
	WPS_PHASE_CANCELLED,
};

const char *wps_phase_name(enum wps_phase phase);

/* Flags for wps_snapshot_opts.flags. */
#define WPS_SNAP_OVERWRITE  (1u << 0) /* replace an existing image at path */
#define WPS_SNAP_NO_DIRECT  (1u << 1) /* never use O_DIRECT (testing) */
/* Protect everything inside the pause (one ioctl per region) instead of
 * converging rounds outside it: a longer pause, for comparison. */
#define WPS_SNAP_FREEZE_SIMPLE (1u << 2)

struct wps_snapshot_opts {
	/* Image path. Written as "<path>.partial", renamed on success. */
	const char *path;
	unsigned int flags;
	/* Bytes of I/O buffers (0: 64 MiB). A quarter is reserved for the
	 * fault path, so a write fault never waits behind the sweep. */
	uint64_t buffer_budget;
	/*
	 * Optional. If set, wps_snapshot_freeze() calls pause() before it
	 * write-protects and resume() right after: the guest is stopped only
	 * for that. If unset, the caller pauses the guest before
	 * wps_snapshot_freeze() and resumes it when the call returns.
	 */
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	void *pause_arg;
	/*
	 * Optional: a userfaultfd already opened by the guest's owner (as a
	 * VMM hands it over). -1 (or 0 when the struct is zeroed: use
	 * WPS_SNAPSHOT_OPTS_INIT) makes the library open its own.
	 */
	int uffd;
	/* The process that owns the guest RAM and the userfaultfd (0: the
	 * caller). With another process, opts.uffd is that process's
	 * userfaultfd (handed over, not yet through UFFDIO_API) and every
	 * region must be backed by a memfd that the caller holds. */
	pid_t pid;
	/* 4 KiB units saved together when a write faults (the faulting one
	 * and its unsaved neighbours in an aligned window): a power of two
	 * <= 64; 0: 16 (64 KiB); 1: the faulting page only. */
	unsigned int fault_window;
};

#define WPS_SNAPSHOT_OPTS_INIT { .uffd = -1 }

struct wps_progress {
	enum wps_phase phase;
	uint64_t bytes_done;   /* pre-images saved, bytes */
	uint64_t bytes_total;  /* bytes populated at the freeze */
	uint64_t faults;       /* write faults serviced */
};

struct wps_snapshot_stats {
	uint64_t pause_ns;          /* guest stopped (pause() .. resume()) */
	uint64_t protect_ns;        /* write-protect inside the pause */
	uint64_t total_ns;          /* freeze start .. image published */
	uint64_t populated_bytes;   /* present at the freeze */
	uint64_t saved_bytes;       /* copied (sweep + faults) */
	uint64_t image_data_bytes;  /* non-zero data written to the image */
	uint64_t image_file_bytes;  /* allocated size of the image file */
	uint64_t sweep_bytes;
	uint64_t fault_bytes;       /* copied on the fault path */
	uint64_t faults;            /* write faults on protected pages */
	uint64_t faults_copied;     /* of which needed a pre-image copy */
	uint64_t faults_huge;       /* of which saved a whole THP extent */
	uint64_t fault_p50_ns;      /* service time: message read .. unprotect */
	uint64_t fault_p99_ns;
	uint64_t fault_max_ns;
	uint64_t events;            /* REMOVE/UNMAP/... events seen */
	uint64_t tracker_bytes;     /* memory the snapshot allocated: I/O
				       buffers, bitmaps, queues */
	unsigned int protect_rounds;/* protection rounds before the pause */
	uint64_t pause_protect_pages; /* pages re-protected inside the pause */
	bool direct_io;             /* image written with O_DIRECT */
};

/*
 * Prepare a snapshot of regions into opts->path. Nothing is protected yet;
 * the image file is created as <path>.partial. -EEXIST if path exists and
 * WPS_SNAP_OVERWRITE is not set; -EINVAL for a bad region table;
 * -EOPNOTSUPP naming the missing userfaultfd feature.
 */
int wps_snapshot_new(struct wps_ctx *ctx, const struct wps_region *regions,
		     unsigned int nr, const struct wps_snapshot_opts *opts,
		     struct wps_snapshot **out);

/* Attach a named opaque blob (VMM device state) to the image. Allowed
 * until wps_snapshot_wait() starts publishing. name: at most 47 bytes. */
int wps_snapshot_add_blob(struct wps_snapshot *snap, const char *name,
			  const void *data, size_t len);

/*
 * The freeze: write-protect every page of every region (populated or not),
 * record which pages are populated, then return; the copy runs in
 * background threads from here on. The image is the memory at this
 * instant. On failure nothing stays protected.
 */
int wps_snapshot_freeze(struct wps_snapshot *snap);

/* Wait until the image is published (0) or the snapshot failed (-errno)
 * or was cancelled (-ECANCELED). In every outcome the guest is left with
 * no protection and the uffd unregistered. */
int wps_snapshot_wait(struct wps_snapshot *snap);

/* Ask a running snapshot to stop; safe from any thread, any time. */
void wps_snapshot_cancel(struct wps_snapshot *snap);

/* Readable from any thread while the snapshot runs. */
void wps_snapshot_progress(struct wps_snapshot *snap, struct wps_progress *p);

/* Complete after wps_snapshot_wait() returns. */
void wps_snapshot_stats(struct wps_snapshot *snap,
			struct wps_snapshot_stats *st);

/* Release everything; cancels and waits first if still running. */
void wps_snapshot_free(struct wps_snapshot *snap);

/* ------------------------------------------------------------------ */
/* Kernel support                                                      */
/* ------------------------------------------------------------------ */

/* Which userfaultfd features the running kernel offers (UFFD_FEATURE_*
 * bits), and whether /dev/userfaultfd or the syscall could be used. */
struct wps_kernel_support {
	uint64_t features;
	bool dev_userfaultfd;
	bool syscall;
	bool pagemap_scan;
};

int wps_probe_kernel(struct wps_ctx *ctx, struct wps_kernel_support *ks);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_WPSNAP_H */
