# manual pages, and the systemd unit (shipped, not installed: where units
# go is the distribution's policy; see the unit's header)
dist_man_MANS = man/wpsnap.1 man/wpsnapd.8
EXTRA_DIST += contrib/wpsnapd.service
