# wpsnapd, the offload daemon (docs/PROTOCOL.md): its socket, the
# QMP-style protocol, guests and jobs. It links the library's convenience
# archive because it logs through base/log.h (docs/ARCHITECTURE.md).
bin_PROGRAMS += daemon/wpsnapd
daemon_wpsnapd_SOURCES = daemon/wpsnapd.c \
	daemon/server.c daemon/server.h \
	daemon/qmp.c daemon/qmp.h \
	daemon/commands.c daemon/commands.h \
	daemon/guest.c daemon/guest.h \
	daemon/job.c daemon/job.h daemon/ckptjob.c daemon/ckptjob.h \
	daemon/restorejob.c daemon/restorejob.h \
	daemon/vmjob.c daemon/vmjob.h \
	daemon/txn.c daemon/txn.h \
	daemon/access.c daemon/access.h
daemon_wpsnapd_LDADD = libwpsnap_priv.la $(JANSSON_LIBS)
EXTRA_DIST += docs/PROTOCOL.md
