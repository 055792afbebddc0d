#!/usr/bin/env bash
# Prints the Go build tag for goclip's JPEG decoder: "jpegturbo" when libjpeg-turbo
# (Debian's libjpeg62-turbo-dev, Ubuntu's libjpeg-turbo8-dev) is installed so that
# internal/jpegturbo compiles and links (its jpeglib.h is libjpeg-turbo's, its static
# libjpeg.a links), else nothing: goclip then decodes JPEGs with Go's image/jpeg, which
# is slower and differs from PIL by a level on some pixels. The Makefile builds and
# tests with the tag it prints; third_party/apt.sh installs the library.
#
#   third_party/find-jpegturbo.sh [--why]     (--why: say on stderr why there is no tag)
#
# GOCLIP_JPEG=auto (the default) probes; GOCLIP_JPEG=go prints nothing (the fallback
# build); GOCLIP_JPEG=turbo fails, saying why, when the probe does.
set -euo pipefail
why=false
[ "${1:-}" = --why ] && why=true
choice=${GOCLIP_JPEG:-auto}
case "$choice" in
  go) $why && echo "find-jpegturbo: GOCLIP_JPEG=go: the Go image/jpeg decoder" >&2; exit 0 ;;
  auto | turbo) ;;
  *) echo "find-jpegturbo: GOCLIP_JPEG=$choice: want auto, turbo or go" >&2; exit 2 ;;
esac
cc=${CC:-$(go env CC 2>/dev/null || echo cc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/probe.c" <<'C'
#include <stdio.h>
#include <jpeglib.h>
#ifndef LIBJPEG_TURBO_VERSION
#error "jpeglib.h is not libjpeg-turbo's"
#endif
int main(void) {
	struct jpeg_decompress_struct d;
	struct jpeg_error_mgr e;
	d.err = jpeg_std_error(&e);
	jpeg_create_decompress(&d);
	jpeg_destroy_decompress(&d);
	return 0;
}
C
# The flags internal/jpegturbo's cgo preamble uses, plus the user's CGO_* ones.
# shellcheck disable=SC2086
if $cc ${CGO_CFLAGS:-} -o "$tmp/probe" "$tmp/probe.c" ${CGO_LDFLAGS:-} -l:libjpeg.a >"$tmp/log" 2>&1; then
  echo jpegturbo
  exit 0
fi
msg="libjpeg-turbo not found ($cc could not build against its jpeglib.h and libjpeg.a: $(grep -m1 -iE 'error|cannot|undefined' "$tmp/log" || head -n1 "$tmp/log")); third_party/apt.sh installs it (libjpeg62-turbo-dev on Debian, libjpeg-turbo8-dev on Ubuntu)"
if [ "$choice" = turbo ]; then
  echo "find-jpegturbo: GOCLIP_JPEG=turbo, but $msg" >&2
  exit 1
fi
$why && echo "find-jpegturbo: $msg; building with Go's image/jpeg" >&2
exit 0
