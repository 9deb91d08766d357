#!/usr/bin/env bash
# Checks that Qt's X11 (xcb) platform plugin finds the system libraries pip cannot install,
# and prints the one package-manager line that installs what is missing.
#
# A stock Debian/Ubuntu desktop lacks a few xcb utility libraries; Qt then aborts with a
# "could not load the Qt platform plugin xcb" message that does not say what to install.
# Exit status: 0 when everything is there (or the xcb plugin will not be used), 1 when
# something is missing (the install line is on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

# Only the X11 plugin needs these: skip for offscreen/wayland/other platforms.
platform=${QT_QPA_PLATFORM:-}
case "$platform" in
    "" | xcb*) ;;
    *) exit 0 ;;
esac
if [ -z "$platform" ] && [ -n "${WAYLAND_DISPLAY:-}" ] && [ -z "${DISPLAY:-}" ]; then
    exit 0  # a Wayland session without XWayland: Qt uses its wayland plugin
fi

plugin=$(ls .venv/lib/python*/site-packages/PySide6/Qt/plugins/platforms/libqxcb.so 2>/dev/null | head -n1 || true)
[ -n "$plugin" ] || exit 0  # PySide6 not installed the usual way: let Qt speak for itself
qpa=$(dirname "$plugin")/../../lib/libQt6XcbQpa.so.6

missing=$( { ldd "$plugin"; [ -f "$qpa" ] && ldd "$qpa"; } 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
# Qt loads libxcb-cursor at run time (dlopen), so ldd cannot see it; Qt >= 6.5 refuses to start without it.
have_lib() {
    if command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q "$1"; then return 0; fi
    if [ -x /sbin/ldconfig ] && /sbin/ldconfig -p 2>/dev/null | grep -q "$1"; then return 0; fi
    for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /lib64 /lib; do
        [ -e "$d/$1" ] && return 0
    done
    return 1
}
have_lib libxcb-cursor.so.0 || missing=$(printf '%s\nlibxcb-cursor.so.0' "$missing")
missing=$(printf '%s\n' "$missing" | sed '/^$/d' | sort -u)
[ -n "$missing" ] || exit 0

# soname -> Debian/Ubuntu package, Fedora/RHEL package
deb_pkg() {
    case "$1" in
        libxcb-icccm.so.*) echo libxcb-icccm4 ;;        libxcb-keysyms.so.*) echo libxcb-keysyms1 ;;
        libxcb-cursor.so.*) echo libxcb-cursor0 ;;      libxcb-image.so.*) echo libxcb-image0 ;;
        libxcb-render-util.so.*) echo libxcb-render-util0 ;; libxcb-util.so.*) echo libxcb-util1 ;;
        libxkbcommon-x11.so.*) echo libxkbcommon-x11-0 ;; libxkbcommon.so.*) echo libxkbcommon0 ;;
        libX11-xcb.so.*) echo libx11-xcb1 ;;            libX11.so.*) echo libx11-6 ;;
        libxcb.so.*) echo libxcb1 ;;                    libEGL.so.*) echo libegl1 ;;
        libGL.so.*) echo libgl1 ;;                      libOpenGL.so.*) echo libopengl0 ;;
        libfontconfig.so.*) echo libfontconfig1 ;;      libfreetype.so.*) echo libfreetype6 ;;
        libdbus-1.so.*) echo libdbus-1-3 ;;             libglib-2.0.so.*) echo libglib2.0-0 ;;
        libxcb-*.so.*) n=${1#libxcb-}; echo "libxcb-${n%%.so.*}$(echo "$1" | sed 's/.*\.so\.//')" ;;
        *) echo "(the package that provides $1)" ;;
    esac
}
rpm_pkg() {
    case "$1" in
        libxcb-icccm.so.*) echo xcb-util-wm ;;          libxcb-keysyms.so.*) echo xcb-util-keysyms ;;
        libxcb-cursor.so.*) echo xcb-util-cursor ;;     libxcb-image.so.*) echo xcb-util-image ;;
        libxcb-render-util.so.*) echo xcb-util-renderutil ;; libxcb-util.so.*) echo xcb-util ;;
        libxkbcommon-x11.so.*) echo libxkbcommon-x11 ;; libxkbcommon.so.*) echo libxkbcommon ;;
        libX11-xcb.so.*) echo libX11-xcb ;;             libX11.so.*) echo libX11 ;;
        libxcb*.so.*) echo libxcb ;;                    libEGL.so.*) echo libglvnd-egl ;;
        libGL.so.*) echo libglvnd-glx ;;                libOpenGL.so.*) echo libglvnd-opengl ;;
        libfontconfig.so.*) echo fontconfig ;;          libfreetype.so.*) echo freetype ;;
        libdbus-1.so.*) echo dbus-libs ;;               libglib-2.0.so.*) echo glib2 ;;
        *) echo "(the package that provides $1)" ;;
    esac
}

ids=""
[ -r /etc/os-release ] && ids=$(. /etc/os-release; echo "${ID:-} ${ID_LIKE:-}")
deb=$(for l in $missing; do deb_pkg "$l"; done | sort -u | tr '\n' ' ')
rpm=$(for l in $missing; do rpm_pkg "$l"; done | sort -u | tr '\n' ' ')
{
    echo "divcolor: the window cannot open: Qt's X11 plugin needs system libraries that are not installed:"
    echo "  $(echo $missing)"
    case " $ids " in
        *" debian "* | *" ubuntu "*) echo "Install them with:"; echo "  sudo apt-get install ${deb% }" ;;
        *" fedora "* | *" rhel "* | *" centos "*) echo "Install them with:"; echo "  sudo dnf install ${rpm% }" ;;
        *) echo "Install them with one of:"; echo "  sudo apt-get install ${deb% }    # Debian, Ubuntu"
           echo "  sudo dnf install ${rpm% }    # Fedora, RHEL" ;;
    esac
    echo "(Headless use needs none of them: QT_QPA_PLATFORM=offscreen, or 'divcolor colorize …'.)"
} >&2
exit 1
