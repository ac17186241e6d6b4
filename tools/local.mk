# The front ends: thin CLIs over the library (docs/ARCHITECTURE.md).
# wpsnap links the library's convenience archive because `bench` measures
# the raw costs the engine is judged against (wp/dirty.h, wp/histo.h,
# wp/compat.h); the others use the public API of the shared library.
bin_PROGRAMS += tools/wpsnap
tools_wpsnap_SOURCES = tools/wpsnap.c tools/snapshot_cmd.c tools/snapshot_cmd.h \
	tools/checkpoint_cmd.c tools/checkpoint_cmd.h tools/netbuf_cmd.c tools/netbuf_cmd.h tools/snapshot_qemu.c tools/snapshot_qemu.h tools/bench.c tools/bench.h \
	tools/bench_base.c tools/bench_base.h tools/bench_ckpt.c tools/bench_ckpt.h \
	tools/bench_restore.c tools/bench_restore.h tools/bench_tail.c tools/bench_tail.h \
	tools/restore_lazy.c tools/restore_lazy.h tools/vm_cmd.c tools/vm_cmd.h \
	tools/parse.h
tools_wpsnap_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_wpsnap_LDADD = guest/libwpsguest.la libwpsnap_priv.la $(JANSSON_LIBS) \
	$(AIO_LIBS) -lm

bin_PROGRAMS += tools/wpsnap-guest
tools_wpsnap_guest_SOURCES = tools/wpsnap-guest.c
tools_wpsnap_guest_LDADD = guest/libwpsguest.la libwpsnap.la

# The driver: holds a namespace's output through timed (or, once wired,
# real) checkpoints, and the bench. Also `wpsnap netbuf` (tools/netbuf_cmd.c).
bin_PROGRAMS += tools/wpsnap-netbuf
tools_wpsnap_netbuf_SOURCES = tools/wpsnap-netbuf.c tools/netbuf_cmd.c tools/netbuf_cmd.h
tools_wpsnap_netbuf_LDADD = libwpsnap.la -lm
