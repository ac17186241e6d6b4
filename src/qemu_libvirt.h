/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the library: the libvirt monitor kind of the QEMU module
 * (src/qemu_libvirt.c), for the VM module (src/vm*.c). Built only with
 * libvirt (HAVE_LIBVIRT); the domain is a virDomainPtr, passed as void *
 * so that this header needs no libvirt header.
 */
#ifndef WPS_QEMU_LIBVIRT_H
#define WPS_QEMU_LIBVIRT_H

#include <sys/types.h>

#include <wpsnap/qemu.h>

/* A QEMU handle on the domain's QEMU through libvirt's monitor. The
 * handle holds a reference to the domain; the caller keeps the
 * connection open until wps_qemu_close(). -ESRCH: no QEMU process of
 * this domain (not running), -ENOTUNIQ: two. */
int qemu_libvirt_handle(struct wps_ctx *ctx, void *domain,
			struct wps_qemu **out);

/* The QEMU process whose command line has `-uuid uuid`. */
int qemu_libvirt_find_pid(struct wps_ctx *ctx, const char *name,
			  const char *uuid, pid_t *out);

/*
 * When libvirt is gone (libvirtd died or restarts), QEMU's monitor socket
 * is free again and accepts one client: a QEMU handle on it, through the
 * QMP socket kind. The socket is the listening Unix socket among QEMU's
 * fds whose path ends in "monitor.sock" (libvirt's name), reached
 * through /proc/PID/root (libvirtd may run in another mount namespace).
 * -ENOENT: no such socket; errors of wps_qemu_open_qmp() (-ECONNREFUSED
 * while libvirtd still holds it).
 */
int qemu_libvirt_open_direct(struct wps_ctx *ctx, pid_t pid,
			     struct wps_qemu **out);
/* Its path alone (for the watchdog): -ENOENT, logged, if none. */
int qemu_libvirt_monitor_path(struct wps_ctx *ctx, pid_t pid, char *out,
			      size_t size);

/* libvirt's last error message on this thread, never NULL. */
const char *qemu_libvirt_error(void);

#endif /* WPS_QEMU_LIBVIRT_H */
