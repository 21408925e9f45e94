// bench/ref/go/chan - the workloads of bench/chan.c in Go, for bench/run chan.
//
//	chan pingpong | select2 | select4 | mpmc   (workers: GOMAXPROCS)
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func main() {
	what := "pingpong"
	if len(os.Args) > 1 {
		what = os.Args[1]
	}
	w := runtime.GOMAXPROCS(0)
	switch what {
	case "pingpong":
		const n = 1000000
		ping, pong := make(chan int64), make(chan int64)
		go func() {
			for i := 0; i < n; i++ {
				v := <-ping
				pong <- v + 1
			}
		}()
		var v int64
		t0 := time.Now()
		for i := 0; i < n; i++ {
			ping <- v
			v = <-pong
		}
		ns := float64(time.Since(t0).Nanoseconds()) / n
		if v != n {
			fmt.Fprintln(os.Stderr, "pingpong: wrong count", v)
		}
		fmt.Printf("chan-pingpong-w%d\tgo\t%.1f\tns/roundtrip\n", w, ns)
	case "select2":
		const n = 2000000
		a, b := make(chan int64, 128), make(chan int64, 128)
		go func() {
			for i := int64(0); i < n; i++ {
				a <- i
			}
		}()
		got := 0
		t0 := time.Now()
		for i := 0; i < n; i++ {
			select {
			case <-a:
				got++
			case <-b:
			case <-time.After(time.Second):
			}
		}
		ns := float64(time.Since(t0).Nanoseconds()) / n
		if got != n {
			fmt.Fprintln(os.Stderr, "select2:", got, "of", n)
		}
		fmt.Printf("select-2+timeout\tgo\t%.1f\tns/select\n", ns)
	case "select4":
		const n = 2000000
		var c [4]chan int64
		for i := range c {
			c[i] = make(chan int64, 128)
			go func(ch chan int64) {
				for j := int64(0); j < n/4; j++ {
					ch <- j
				}
			}(c[i])
		}
		var wins [4]int
		t0 := time.Now()
		for i := 0; i < n; i++ {
			select {
			case <-c[0]:
				wins[0]++
			case <-c[1]:
				wins[1]++
			case <-c[2]:
				wins[2]++
			case <-c[3]:
				wins[3]++
			}
		}
		ns := float64(time.Since(t0).Nanoseconds()) / n
		fmt.Printf("select-4\tgo\t%.1f\tns/select\n", ns)
	case "mpmc":
		const n = 10000000
		const side = 4
		c := make(chan int64, 64)
		var wg, rg sync.WaitGroup
		var mu sync.Mutex
		got := 0
		t0 := time.Now()
		for i := 0; i < side; i++ {
			rg.Add(1)
			go func() {
				k := 0
				for range c {
					k++
				}
				mu.Lock()
				got += k
				mu.Unlock()
				rg.Done()
			}()
		}
		for i := 0; i < side; i++ {
			wg.Add(1)
			go func() {
				for j := int64(0); j < n/side; j++ {
					c <- j
				}
				wg.Done()
			}()
		}
		wg.Wait()
		close(c)
		rg.Wait()
		secs := time.Since(t0).Seconds()
		if got != n {
			fmt.Fprintln(os.Stderr, "mpmc: got", got, "of", n)
		}
		fmt.Printf("chan-mpmc\tgo\t%.0f\telems/s\n", float64(n)/secs)
	default:
		fmt.Fprintln(os.Stderr, "usage: chan pingpong|select2|select4|mpmc")
		os.Exit(2)
	}
}
