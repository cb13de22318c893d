package vm

import (
	"os"
	"testing"
	"time"
)

func TestExpBoot(t *testing.T) {
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ir := Initramfs{Kernel: k, Modules: VirtiofsModules, Binaries: []string{"rsync"}, Init: "#!/bin/sh\n/bin/busybox --install -s /bin\nmount -t proc p /proc\nfor m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci fuse virtiofs; do insmod /lib/modules/$m.ko || echo INSMOD-FAIL $m; done\nrsync --version | head -1\necho HELLO $(cut -d' ' -f1 /proc/uptime)\npoweroff -f\n"}
	if err := ir.Write(dir + "/initrd"); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(dir + "/initrd")
	t.Logf("initrd %d bytes", st.Size())
	g, err := Start(Config{Kernel: k, Initrd: dir + "/initrd", Dir: dir, Accel: os.Getenv("ACCEL")})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Kill()
	start := time.Now()
	err = g.WaitFor("HELLO", 60*time.Second)
	t.Logf("after %v: %v\n%s", time.Since(start), err, g.Log())
}
