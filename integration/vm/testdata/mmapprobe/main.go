// Command mmapprobe runs inside the test guest: it maps a file of the
// virtiofs share privately (read) and shared (write) and prints one line
// per mapping, "private ok DATA" / "shared ok" or the error, so the host
// can tell a mapping that works from one that fails cleanly.
package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mmapprobe FILE SHARED-WRITE-DATA")
		os.Exit(2)
	}
	path, data := os.Args[1], os.Args[2]
	private(path)
	shared(path, data)
}

func private(path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Println("private open:", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		fmt.Println("private stat:", err, fi.Size())
		return
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		fmt.Println("private mmap:", err)
		return
	}
	fmt.Printf("private ok %s\n", m)
	syscall.Munmap(m)
}

func shared(path, data string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Println("shared open:", err)
		return
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, len(data), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Println("shared mmap:", err)
		return
	}
	copy(m, data)
	// MS_SYNC: the page goes to the daemon before we report.
	if _, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), syscall.MS_SYNC); e != 0 {
		fmt.Println("shared msync:", e)
		return
	}
	if err := syscall.Munmap(m); err != nil {
		fmt.Println("shared munmap:", err)
		return
	}
	fmt.Println("shared ok")
}
