package vm

import (
	"fmt"
	"strings"
)

// InitPrologue is the start of every /init: busybox applets, the pseudo
// file systems, and the modules (from /lib/modules/NAME.ko, in order).
// A failed insmod is reported as "V2B INSMOD_FAIL=NAME".
func InitPrologue(modules []string) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
say() { echo "V2B $1=$2"; }
`)
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s.ko || say INSMOD_FAIL %s\n", m, m)
	}
	b.WriteString(`say UPTIME "$(cut -d' ' -f1 /proc/uptime)"
`)
	return b.String()
}

// KernelArg returns the value of name=VALUE on the guest's kernel command
// line, as shell code.
func KernelArg(name string) string {
	return fmt.Sprintf(`$(sed -n 's/.*%s=\([^ ]*\).*/\1/p' /proc/cmdline)`, strings.ReplaceAll(name, ".", `\.`))
}
