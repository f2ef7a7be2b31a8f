# vpbox: an idle console shell ends after 15 minutes (CIS Debian 12 v1.1.0 5.4.3.2;
# 等保 2.0 8.1.4.1 b).
TMOUT=900
readonly TMOUT
export TMOUT
