# owned by the offload daemon: wpsnapd and the VMM-side client API that
# libwpsnap exports (the client speaks JSON through jansson).
AM_CPPFLAGS += $(JANSSON_CFLAGS)
libwpsnap_la_SOURCES += src/client.c
libwpsnap_la_LIBADD += $(JANSSON_LIBS)
pkginclude_HEADERS += include/wpsnap/client.h

bin_PROGRAMS += tools/wpsnapd
tools_wpsnapd_SOURCES = tools/wpsnapd.c \
	src/daemon/server.c src/daemon/server.h \
	src/daemon/qmp.c src/daemon/qmp.h \
	src/daemon/commands.c src/daemon/commands.h \
	src/daemon/guest.c src/daemon/guest.h \
	src/daemon/job.c src/daemon/job.h src/daemon/ckptjob.c src/daemon/restorejob.c \
	src/daemon/txn.c src/daemon/txn.h
tools_wpsnapd_LDADD = libwpsnap.la $(JANSSON_LIBS)
EXTRA_DIST += docs/PROTOCOL.md
