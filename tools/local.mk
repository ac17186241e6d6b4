bin_PROGRAMS += tools/wpsnap
tools_wpsnap_SOURCES = tools/wpsnap.c tools/snapshot_cmd.c tools/snapshot_cmd.h \
	tools/checkpoint_cmd.c tools/checkpoint_cmd.h tools/netbuf_cmd.c tools/netbuf_cmd.h tools/snapshot_qemu.c tools/snapshot_qemu.h tools/bench.c tools/bench.h \
	tools/bench_base.c tools/bench_base.h tools/bench_ckpt.c tools/bench_ckpt.h \
	tools/bench_restore.c tools/bench_restore.h \
	tools/restore_lazy.c tools/restore_lazy.h
tools_wpsnap_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_wpsnap_LDADD = tools/guest/libwpsguest.la libwpsnap.la $(JANSSON_LIBS) \
	$(AIO_LIBS) -lm
