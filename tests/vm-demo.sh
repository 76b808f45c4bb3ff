# Run inside the Linux host (busybox sh) by tests/linux-host.sh through scripts/run.sh --exec
# (with --with-demo): the SeKVM demo. A protected VM with 2 vCPUs (run-guest --demo) boots
# the signed demo kernel, whose built-in initramfs asks on the console for the passphrase of
# the LUKS2 root disk; the test types a wrong one (refused, asked again), then the right one,
# logs in at the Debian root's login prompt with user and password, fetches a file from the
# host's HTTP server over virtio-net, prints its md5, and logs out, which powers the VM off.
# The console is QEMU's -serial pipe: the test waits for each prompt before it types.
# Prints KEY VALUE lines the tier checks, then the console (demo: lines).
#
# /guest/demo/strings.hex has the demo's passphrase, login and password, and the plaintext
# marker only its encrypted disk holds, hex-encoded (so that the host's memory holds them in
# the clear only where a test or the console puts them), and the md5 of the marker file. This
# test never decodes the marker; the passphrase and password it types go through the host:
# the console is the host's QEMU, so they pass through the host's memory.
vms() { cat /sys/module/kserv/parameters/kcore_vms; }
unhex() { printf "$(sed -n "s/^$1 //p" /guest/demo/strings.hex | sed 's/../\\x&/g')"; }
now() { cut -d. -f1 /proc/uptime; }
console=/tmp/demo.txt

mkdir -p /tmp/www
head -c 200000 /dev/urandom > /tmp/www/file
echo "host-file-md5 $(md5sum < /tmp/www/file | cut -d' ' -f1)"
echo "host-marker-md5 $(sed -n 's/^marker-file-md5 //p' /guest/demo/strings.hex)"
httpd -p 127.0.0.1:8080 -h /tmp/www

rm -f /tmp/demo.in /tmp/demo.out "$console"
mkfifo /tmp/demo.in /tmp/demo.out
cat /tmp/demo.out > "$console" &
reader=$!
t0=$(now)
timeout 600 run-guest --demo --serial-pipe /tmp/demo 2> /tmp/demo.err &
qemu=$!
exec 3<> /tmp/demo.in

# wait_for N REGEX SECONDS: until the console has N lines matching REGEX (extended; a
# prompt counts before its line ends), or QEMU ended, or SECONDS passed (then false).
wait_for() {
    i=0
    while [ "$(tr -d '\r' < "$console" | grep -cE -- "$2")" -lt "$1" ]; do
        kill -0 "$qemu" 2> /dev/null || return 1
        i=$((i + 1))
        [ "$i" -le "$3" ] || return 1
        sleep 1
    done
}
# step NAME N REGEX SECONDS: wait_for, then print "demo-NAME 1 at SECONDS-SINCE-START" (or 0).
step() {
    if wait_for "$2" "$3" "$4"; then echo "demo-$1 1 at $(($(now) - t0)) s"; else echo "demo-$1 0 at $(($(now) - t0)) s"; return 1; fi
}
# send TEXT: a line on the console, as a terminal sends it (Enter is a carriage return). The
# prompt is out, and the program reading the answer may still be about to flush the tty's
# input (cryptsetup turns echo off with TCSAFLUSH after its prompt): give it a moment.
send() { sleep 2; printf '%s\r' "$1" >&3; }

# shift_hex HEX: each byte plus one, as the attack module takes a pattern (so the pattern in
# the clear is never in the host's memory because of the search itself).
shift_hex() {
    for b in $(echo "$1" | sed 's/../& /g'); do printf '%02x' $(((0x$b + 1) & 255)); done
}
scan_host_ram() {
    insmod "/lib/modules/$(uname -r)/kserv_attack.ko" || return
    marker=$(sed -n 's/^marker //p' /guest/demo/strings.hex)
    # Its last 32 bytes (the random token of this build).
    echo "pattern marker $(shift_hex "$(echo "$marker" | sed 's/.*\(.\{64\}\)$/\1/')")" > /dev/kserv_attack
    echo "pattern served-file $(shift_hex "$(od -An -tx1 -N32 /tmp/www/file | tr -d ' \n')")" > /dev/kserv_attack
    echo scan > /dev/kserv_attack
    sed 's/^/demo-scan: /' /dev/kserv_attack
    rmmod kserv_attack
}

run_demo() {
    step passphrase-prompt 1 'Enter passphrase for /dev/vda:' 400 || return
    send "not-the-passphrase"
    step wrong-refused 1 'No key available with this passphrase' 120 || return
    step passphrase-prompt-again 2 'Enter passphrase for /dev/vda:' 60 || return
    send "$(unhex passphrase)"
    step unlocked 1 '^sekvm-demo: root disk unlocked' 120 || return
    step login-prompt 1 'sekvm-demo login:' 180 || return
    send "$(unhex user)"
    step password-prompt 1 'Password:' 60 || return
    send "$(unhex password)"
    step shell 1 '@sekvm-demo:' 60 || return
    # Each answer starts a line with DEMO-; the echo of the typed command does not (the
    # shell's prompt comes first).
    send 'echo "DEMO-USER $(id -un) $(uname -r)"'
    step user 1 '^DEMO-USER ' 60
    send 'echo "DEMO-CPUS $(grep -c ^processor /proc/cpuinfo) $(cat /sys/devices/system/cpu/online)"'
    step cpus 1 '^DEMO-CPUS ' 60
    send 'echo "DEMO-ROOT $(grep " / " /proc/mounts | cut -d" " -f1-3)"'
    step root 1 '^DEMO-ROOT ' 60
    # The marker file, read into the guest's memory, its plaintext never on the console.
    send 'echo "DEMO-MARKER-MD5 $(md5sum < ~/plaintext-marker.txt | cut -d" " -f1)"'
    step marker 1 '^DEMO-MARKER-MD5 ' 60
    # While the guest holds the disk's plaintext (the marker file, read into its page cache
    # through dm-crypt), all of the host's RAM is searched for it by the project's malicious
    # module (kserv-shim/attack): never found. The same search finds 32 bytes of the file
    # the host serves (the control: a pattern the host does hold, passed the same way).
    scan_host_ram
    send 'wget -q -O /tmp/file http://10.0.2.2:8080/file; echo "DEMO-FETCHED $(md5sum < /tmp/file | cut -d" " -f1) $(wc -c < /tmp/file)"'
    step fetched 1 '^DEMO-FETCHED ' 120
    send 'exit'
    step logged-out 1 '^sekvm-demo: logged out' 60
}
run_demo
wait "$qemu"
echo "demo-qemu-status $? at $(($(now) - t0)) s killed $(grep -c terminating /tmp/demo.err)"
exec 3>&-
kill "$reader" 2> /dev/null
tr -d '\r' < "$console" | grep '^DEMO-' | sed 's/^/answer: /'
sed 's/^/qemu-stderr: /' /tmp/demo.err
echo 0 > /sys/module/kserv/parameters/protected_vms
echo "demo-kernel-signed-bytes $(wc -c < /guest/demo/Image.signed)"
dmesg | sed -n 's/^\[[^]]*\] \(kserv: protected VM\)/\1/p'
echo "vms-after-demo $(vms)"
echo "host-kernel-complaints $(dmesg | grep -cE 'WARNING:|Oops|BUG:|Call trace:|kserv: bug')"
# The console, printable characters only (the shell's line editing sends escapes).
tr -d '\r' < "$console" | tr -cd '\11\12\40-\176' | sed 's/^/demo: /'
