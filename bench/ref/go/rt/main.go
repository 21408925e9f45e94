// The runtime workloads of bench/rt.c, in Go, printing the same lines with
// system "go".  Usage: rt switch|spawn-join|skynet|timers|idle-mem
// (GOMAXPROCS picks the worker count).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	v, _ := strconv.ParseInt(f[1], 10, 64)
	return v * 4
}

func peakKB() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss
}

func skynet(c chan int, num, size int) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int, 10)
	step := size / 10
	for i := 0; i < 10; i++ {
		go skynet(rc, num+i*step, step)
	}
	sum := 0
	for i := 0; i < 10; i++ {
		sum += <-rc
	}
	c <- sum
}

func main() {
	what := "switch"
	if len(os.Args) > 1 {
		what = os.Args[1]
	}
	w := runtime.GOMAXPROCS(0)
	switch what {
	case "switch":
		const n = 5000000
		var wg sync.WaitGroup
		wg.Add(2)
		t0 := time.Now()
		for k := 0; k < 2; k++ {
			go func() {
				for i := 0; i < n/2; i++ {
					runtime.Gosched()
				}
				wg.Done()
			}()
		}
		wg.Wait()
		fmt.Printf("switch\tgo\t%.1f\tns/switch\n", float64(time.Since(t0).Nanoseconds())/n)
	case "spawn-join":
		const n = 1000000
		done := make(chan struct{})
		t0 := time.Now()
		for i := 0; i < n; i++ {
			go func() { done <- struct{}{} }()
			<-done
		}
		fmt.Printf("spawn-join-w%d\tgo\t%.1f\tns/task\n", w, float64(time.Since(t0).Nanoseconds())/n)
	case "skynet":
		c := make(chan int)
		t0 := time.Now()
		go skynet(c, 0, 1000000)
		sum := <-c
		ms := float64(time.Since(t0).Nanoseconds()) / 1e6
		if sum != 499999500000 {
			fmt.Fprintln(os.Stderr, "skynet: wrong sum", sum)
		}
		fmt.Printf("skynet-w%d\tgo\t%.1f\tms\n", w, ms)
		fmt.Printf("skynet-w%d-rss\tgo\t%.1f\tMB\n", w, float64(peakKB())/1024)
	case "timers":
		const n = 10000
		late := make([]int64, n)
		early := 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				ms := 1 + (i*7919)%50
				d := time.Now().Add(time.Duration(ms) * time.Millisecond)
				time.Sleep(time.Until(d))
				l := time.Since(d).Nanoseconds()
				if l < 0 {
					mu.Lock()
					early++
					mu.Unlock()
				}
				late[i] = l
				wg.Done()
			}(i)
		}
		wg.Wait()
		wall := float64(time.Since(t0).Nanoseconds()) / 1e6
		sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
		var mean float64
		for _, l := range late {
			mean += float64(l)
		}
		mean /= n
		fmt.Printf("timers-wall\tgo\t%.1f\tms\n", wall)
		fmt.Printf("timers-mean\tgo\t%.1f\tus\n", mean/1e3)
		fmt.Printf("timers-p99\tgo\t%.1f\tus\n", float64(late[n*99/100])/1e3)
		fmt.Printf("timers-early\tgo\t%d\tcount\n", early)
		one := make([]int64, 101)
		for i := range one {
			d := time.Now().Add(time.Millisecond)
			time.Sleep(time.Until(d))
			one[i] = time.Since(d).Nanoseconds()
		}
		sort.Slice(one, func(a, b int) bool { return one[a] < one[b] })
		fmt.Printf("timer-single-median\tgo\t%.1f\tus\n", float64(one[50])/1e3)
	case "idle-mem":
		const n = 100000
		runtime.GC()
		before := rssKB()
		stop := make(chan struct{})
		for i := 0; i < n; i++ {
			go func() {
				select {
				case <-stop:
				case <-time.After(time.Hour):
				}
			}()
		}
		time.Sleep(500 * time.Millisecond)
		after := rssKB()
		fmt.Printf("idle-mem\tgo\t%.0f\tbytes/task\n", float64(after-before)*1024/n)
		close(stop)
	}
}
