// The Go reference of bench/run net: a TCP echo server on package net, one
// goroutine per connection reading into its own 16 KiB buffer and writing
// back what came (the way Go servers are written).  Usage: net PORT
// (GOMAXPROCS picks the worker count; bench/groups/net.sh sets 1).
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16384)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	port := 7100
	if len(os.Args) > 1 {
		port, _ = strconv.Atoi(os.Args[1])
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go net echo:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}
