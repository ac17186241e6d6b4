# netbuf: network output commit for periodic checkpoints (docs/NETBUF.md).
# Built as a convenience library so that only these files see the libnl
# flags; it is linked into libwpsnap.
pkginclude_HEADERS += include/wpsnap/netbuf.h
noinst_LTLIBRARIES += src/libwpsnetbuf.la
src_libwpsnetbuf_la_SOURCES = \
	src/netbuf.c \
	src/netbuf_int.h \
	src/netbuf_nfq.c \
	src/netbuf_plug.c
src_libwpsnetbuf_la_CFLAGS = $(AM_CFLAGS) $(NL_CFLAGS) $(NLNF_CFLAGS)
src_libwpsnetbuf_la_LIBADD = $(NL_LIBS) $(NLNF_LIBS)
libwpsnap_la_LIBADD += src/libwpsnetbuf.la

# The driver: holds a namespace's output through timed (or, once wired,
# real) checkpoints, and the bench. Also `wpsnap netbuf` (tools/netbuf_cmd.c).
bin_PROGRAMS += tools/wpsnap-netbuf
tools_wpsnap_netbuf_SOURCES = tools/wpsnap-netbuf.c tools/netbuf_cmd.c tools/netbuf_cmd.h
tools_wpsnap_netbuf_LDADD = libwpsnap.la -lm
