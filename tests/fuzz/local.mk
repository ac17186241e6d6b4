# owned by the fuzz targets (tests/fuzz/, docs/RELIABILITY.md "Fuzzing").
#
# `make fuzz` builds one libFuzzer binary per target with clang and
# -fsanitize=fuzzer,address,undefined, from the project's own sources
# compiled again with $(FUZZ_CC) into tests/fuzz/obj/ (the libtool library
# is gcc-built and uninstrumented). Nothing here is part of `all`, `check`
# or `distcheck`, which never need clang; the sources and the seed corpus
# are distributed so that a tarball can fuzz too.
# `tests/fuzz/run.sh SECONDS` runs them (CI: .ci/run).

FUZZ_TARGETS = image chain qmp ledger wset netbuf nbd_uri qemu_layout
# vm.json and domain XML are read only by the VM module (with libvirt)
if HAVE_LIBVIRT
FUZZ_TARGETS += vm_dir
endif

# The library, the netbuf backends, the reference guest's ledger, and the
# daemon's request parser and QMP helpers (not its server, guests or jobs:
# fuzz_qmp.c stubs those so that no handler reaches the world).
# (Headers in these lists are skipped by the compile loop.)
FUZZ_LIB_SRCS = $(libwpsnap_priv_la_SOURCES) $(src_libwpsnetbuf_la_SOURCES) \
	guest/guest.c guest/ledger.c guest/hugepool.c \
	daemon/commands.c daemon/qmp.c \
	tests/fuzz/fuzzutil.c

FUZZ_CFLAGS = -g -O1 -std=gnu11 -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=undefined \
	$(WARN_CFLAGS) -pthread
FUZZ_CPPFLAGS = -I$(top_srcdir)/include -I$(top_srcdir) -I$(top_builddir) \
	$(NBD_CFLAGS) $(JANSSON_CFLAGS) $(NL_CFLAGS) $(NLNF_CFLAGS) \
	$(LIBVIRT_CFLAGS) $(LIBXML_CFLAGS)
FUZZ_LIBS = $(AIO_LIBS) $(NBD_LIBS) $(JANSSON_LIBS) $(NL_LIBS) $(NLNF_LIBS) \
	$(LIBVIRT_LIBS) $(LIBXML_LIBS) -lz -lm

EXTRA_DIST += tests/fuzz/local.mk tests/fuzz/run.sh tests/fuzz/fuzzutil.h \
	tests/fuzz/fuzzutil.c tests/fuzz/gen_seeds.c tests/fuzz/corpus \
	tests/fuzz/fuzz_image.c tests/fuzz/fuzz_chain.c tests/fuzz/fuzz_qmp.c \
	tests/fuzz/fuzz_ledger.c tests/fuzz/fuzz_wset.c tests/fuzz/fuzz_netbuf.c \
	tests/fuzz/fuzz_nbd_uri.c tests/fuzz/fuzz_qemu_layout.c \
	tests/fuzz/fuzz_vm_dir.c

.PHONY: fuzz fuzz-check-cc fuzz-seeds fuzz-clean

fuzz-check-cc:
	@if test -n "$(FUZZ_MISSING)"; then \
		echo "make fuzz: cannot build the fuzz targets: $(FUZZ_MISSING)" >&2; \
		echo "make fuzz: then run ./configure again" >&2; exit 1; fi

# One archive of instrumented objects; -fsanitize=fuzzer-no-link gives
# them the coverage feedback without a second main().
tests/fuzz/libfuzzwps.a: $(FUZZ_LIB_SRCS) config.h
	@$(MAKE) --no-print-directory fuzz-check-cc
	@$(MKDIR_P) tests/fuzz/obj
	@rm -f $@
	$(AM_V_at)for f in $(FUZZ_LIB_SRCS); do \
		case $$f in *.c) ;; *) continue ;; esac; \
		o=tests/fuzz/obj/`echo $$f | tr / _ | sed 's/\.c$$/.o/'`; \
		echo "  FUZZCC   $$f"; \
		$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
			-c $(srcdir)/$$f -o $$o || exit 1; \
	done
	$(AM_V_at)$(AR) rcs $@ tests/fuzz/obj/*.o

fuzz: fuzz-check-cc tests/fuzz/libfuzzwps.a
	@for t in $(FUZZ_TARGETS); do \
		echo "  FUZZLD   tests/fuzz/fuzz_$$t"; \
		$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer \
			$(srcdir)/tests/fuzz/fuzz_$$t.c tests/fuzz/libfuzzwps.a \
			$(FUZZ_LIBS) -o tests/fuzz/fuzz_$$t || exit 1; \
	done

# Regenerate the checked-in seeds from the real writers (review the diff).
fuzz-seeds: fuzz-check-cc tests/fuzz/libfuzzwps.a
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
		$(srcdir)/tests/fuzz/gen_seeds.c tests/fuzz/libfuzzwps.a $(FUZZ_LIBS) \
		-o tests/fuzz/gen_seeds
	for t in image chain ledger wset qemu_layout; do $(MKDIR_P) $(srcdir)/tests/fuzz/corpus/$$t; done
	ASAN_OPTIONS=detect_leaks=1 tests/fuzz/gen_seeds $(srcdir)/tests/fuzz/corpus

fuzz-clean:
	rm -rf tests/fuzz/obj tests/fuzz/libfuzzwps.a tests/fuzz/gen_seeds
	for t in $(FUZZ_TARGETS); do rm -f tests/fuzz/fuzz_$$t; done

clean-local: fuzz-clean
