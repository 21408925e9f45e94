// The event workloads of bench/events.c, in Go, printing the same lines with
// system "go".  Usage: events fanout-100|unicast-workers
// (GOMAXPROCS picks the worker count; EVENTS_N the event count).
//
//	fanout-100: one channel of capacity 64 per receiver (100 of them), the
//	  sender loops sending each event to every channel; ns per copy.
//	unicast-workers: one shared channel of capacity 64, 8 receiving
//	  goroutines; events per second.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

type event struct {
	v       int64
	expires time.Time
}

// suffix names the one-thread variant as bench/events.c does.
func suffix() string {
	if runtime.GOMAXPROCS(0) == 1 {
		return "-w1"
	}
	return ""
}

func count() int {
	if s := os.Getenv("EVENTS_N"); s != "" {
		n, _ := strconv.Atoi(s)
		return n
	}
	return 1000000
}

func fanout(n int) {
	const R = 100
	chans := make([]chan *event, R)
	got := make([]int, R)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan *event, 64)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for range chans[i] {
				got[i]++
			}
		}(i)
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ev := &event{v: int64(i)}
		for _, c := range chans {
			c <- ev
		}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	el := time.Since(t0)
	total := 0
	for _, g := range got {
		total += g
	}
	fmt.Printf("fanout-100%s\tgo\t%.1f\tns/copy\n", suffix(), float64(el.Nanoseconds())/float64(total))
}

func unicast(n int) {
	const R = 8
	c := make(chan *event, 64)
	got := make([]int, R)
	var wg sync.WaitGroup
	for i := 0; i < R; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for range c {
				got[i]++
			}
		}(i)
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		c <- &event{v: int64(i)}
	}
	close(c)
	wg.Wait()
	el := time.Since(t0)
	total, lo, hi := 0, -1, 0
	for _, g := range got {
		total += g
		if lo < 0 || g < lo {
			lo = g
		}
		if g > hi {
			hi = g
		}
	}
	fmt.Printf("unicast-workers%s\tgo\t%.0f\tevents/s\n", suffix(), float64(total)/el.Seconds())
	fmt.Printf("# unicast-workers%s go spread (max-min)/mean %.1f%%\n", suffix(),
		100*float64(hi-lo)/(float64(total)/R))
}

func main() {
	what := "fanout-100"
	if len(os.Args) > 1 {
		what = os.Args[1]
	}
	switch what {
	case "fanout-100":
		fanout(count())
	case "unicast-workers":
		unicast(count())
	default:
		fmt.Fprintln(os.Stderr, "usage: events fanout-100|unicast-workers")
		os.Exit(2)
	}
}
