# wpsnap snapshot --pid: a process that knows nothing about wpsnap
# (tests/integration/attach_target.c, also the checker of its images) and
# the end-to-end script.
check_PROGRAMS += tests/integration/attach_target
tests_integration_attach_target_SOURCES = tests/integration/attach_target.c
tests_integration_attach_target_LDADD = libwpsnap_priv.la
TESTS += tests/integration/attach.sh
EXTRA_DIST += tests/integration/attach.sh
