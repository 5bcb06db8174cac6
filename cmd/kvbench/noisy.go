package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
)

// floodEnv is the environment variable that makes kvbench the flooding
// child process of the noisy workload; its value is a floodSpec as JSON.
// main checks it before anything else.
const floodEnv = "KVBENCH_FLOOD"

// floodKeyPrefix starts the flood's keys, which live in project A.
const floodKeyPrefix = "kvbench-flood:"

// floodReadyTimeout bounds how long the parent waits for the child to
// connect and write its keys.
const floodReadyTimeout = 60 * time.Second

// floodStopTimeout bounds how long the parent waits, after telling the
// child to stop, for its last answers, its cleanup and its report.
const floodStopTimeout = 30 * time.Second

// floodSpec is what the parent tells the child.
type floodSpec struct {
	Socket    string `json:"socket"`
	Conns     int    `json:"conns"`
	Batch     int    `json:"batch"`
	ValueSize int    `json:"value_size"`
	Keep      bool   `json:"keep"`
}

// floodReady is the child's first line on stdout: connected, keys written,
// flooding.
type floodReady struct {
	Project string `json:"project"`
	Batch   int    `json:"batch"` // the batch size used: --flood-batch, or the daemon's limit if lower
}

// floodReport is the child's last line on stdout, after it stopped.
type floodReport struct {
	Requests   uint64  `json:"requests"`    // setMany and getMany answered without error
	Failed     uint64  `json:"failed"`      // requests answered with an error
	FirstError string  `json:"first_error"` // the first of those errors
	Seconds    float64 `json:"seconds"`     // from ready to stop
	Error      string  `json:"error"`       // why the child could not flood or clean up
}

// flood is a running flood child, from the parent's side.
type flood struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	ready floodReady
}

// startFlood starts the child under cfg.Flood.UID and returns once it
// floods. It refuses a uid it cannot switch to, and a child the daemon
// puts in kvbench's own project.
func startFlood(ctx context.Context, cfg *Config, socket, project string, progress io.Writer) (*flood, error) {
	if err := canFlood(cfg); err != nil {
		return nil, err
	}
	uid := cfg.Flood.UID
	spec, err := json.Marshal(floodSpec{Socket: socket, Conns: cfg.Flood.Conns, Batch: cfg.Flood.Batch, ValueSize: cfg.Flood.ValueSize, Keep: cfg.Keep})
	if err != nil {
		return nil, err
	}
	// /proc/self/exe is this very binary, even where the child's uid could
	// not reach its path.
	cmd := exec.Command("/proc/self/exe")
	cmd.Dir = "/"
	cmd.Env = []string{floodEnv + "=" + string(spec), "PATH=/usr/bin:/bin"}
	cmd.Stderr = progress
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}, // no supplementary groups
		Pdeathsig:  syscall.SIGKILL,                                         // never outlive kvbench
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the flood as uid %d: %w", uid, err)
	}
	f := &flood{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	line, err := f.readLine(ctx, floodReadyTimeout)
	if err == nil {
		err = json.Unmarshal(line, &f.ready)
	}
	if err == nil && f.ready.Project == "" {
		var rep floodReport
		if json.Unmarshal(line, &rep) == nil && rep.Error != "" {
			err = errors.New(rep.Error)
		} else {
			err = fmt.Errorf("unexpected line %q", line)
		}
	}
	if err != nil {
		f.kill()
		return nil, fmt.Errorf("the flood (uid %d) did not start: %w", uid, err)
	}
	if f.ready.Project == project {
		f.stop(ctx)
		return nil, fmt.Errorf("the daemon puts the flood (uid %d) in project %q, kvbench's own: run it with a --uid-map that maps uid %d to another project", uid, project, uid)
	}
	return f, nil
}

// canFlood says why this process cannot start the flood, if it cannot:
// checked before the first run, so that a long benchmark does not fail at
// its end.
func canFlood(cfg *Config) error {
	uid := cfg.Flood.UID
	if uid == os.Getuid() {
		return fmt.Errorf("--flood-uid %d is kvbench's own uid: the flood must run under another uid, mapped to another project", uid)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("running the flood as --flood-uid %d needs root (kvbench runs as uid %d)", uid, os.Geteuid())
	}
	return nil
}

// readLine reads the child's next line within timeout.
func (f *flood) readLine(ctx context.Context, timeout time.Duration) ([]byte, error) {
	type res struct {
		line []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() { // ends with the child's stdout, which kill closes at worst
		line, err := f.out.ReadBytes('\n')
		ch <- res{line, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("it exited (%v)", r.err)
		}
		return r.line, nil
	case <-timer.C:
		return nil, fmt.Errorf("no answer within %v", timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stop tells the child to stop (its stdin ends), and returns its report.
func (f *flood) stop(ctx context.Context) (floodReport, error) {
	f.stdin.Close()
	var rep floodReport
	line, err := f.readLine(ctx, floodStopTimeout)
	if err == nil {
		err = json.Unmarshal(line, &rep)
	}
	if err != nil {
		f.kill()
		return rep, fmt.Errorf("the flood did not stop cleanly: %w", err)
	}
	if err := f.cmd.Wait(); err != nil {
		return rep, fmt.Errorf("the flood: %w", err)
	}
	return rep, nil
}

// kill ends the child at once.
func (f *flood) kill() {
	f.cmd.Process.Kill()
	f.cmd.Wait()
}

// floodMain is the child: it floods spec's daemon until its stdin ends,
// then deletes its keys (unless spec.Keep) and reports on stdout. Its
// return value is the exit status.
func floodMain(stdin io.Reader, stdout, stderr io.Writer, specJSON string) int {
	fail := func(err error) int {
		b, _ := json.Marshal(floodReport{Error: err.Error()})
		fmt.Fprintf(stdout, "%s\n", b)
		fmt.Fprintf(stderr, "kvbench flood: %v\n", err)
		return 1
	}
	var spec floodSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail(fmt.Errorf("$%s: %w", floodEnv, err))
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stopped := make(chan struct{})
	go func() { // ends with stdin, which the parent closes (or its death does)
		io.Copy(io.Discard, stdin)
		stop()
		close(stopped)
	}()

	setup, cancelSetup := context.WithTimeout(ctx, floodReadyTimeout)
	defer cancelSetup()
	clients := make([]*client.Client, 0, spec.Conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range spec.Conns {
		c, err := client.DialOptions(setup, client.Options{Socket: spec.Socket, ClientName: "kvbench-flood"})
		if err != nil {
			return fail(fmt.Errorf("connect as uid %d: %w", os.Getuid(), err))
		}
		clients = append(clients, c)
	}
	batch := spec.Batch
	if lim := clients[0].Limits().MaxBatch; lim > 0 && int64(batch) > lim {
		batch = int(lim)
	}
	value := jsonValue(spec.ValueSize, 1712345678)
	width := len(strconv.Itoa(spec.Conns*batch - 1))
	keys := make([][]string, spec.Conns)
	items := make([][]client.BytesItem, spec.Conns)
	for i := range keys {
		for j := range batch {
			k := fmt.Sprintf("%s%0*d", floodKeyPrefix, width, i*batch+j)
			keys[i] = append(keys[i], k)
			items[i] = append(items[i], client.BytesItem{Key: k, Value: value})
		}
		if err := clients[i].SetManyBytes(setup, items[i]); err != nil {
			return fail(fmt.Errorf("write the flood's keys: %w", err))
		}
	}
	b, _ := json.Marshal(floodReady{Project: clients[0].Project(), Batch: batch})
	fmt.Fprintf(stdout, "%s\n", b)

	start := time.Now()
	var done, failed atomic.Uint64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			count := func(err error) {
				switch {
				case ctx.Err() != nil: // stopping: the call was cut short
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					// A refused request comes back at once: pause, so
					// that the flood stays a load, not a spin.
					time.Sleep(time.Millisecond)
				default:
					done.Add(1)
				}
			}
			for ctx.Err() == nil {
				count(c.SetManyBytes(ctx, items[i]))
				_, err := c.GetManyBytes(ctx, keys[i])
				count(err)
			}
		})
	}
	<-stopped
	wg.Wait()
	rep := floodReport{Requests: done.Load(), Failed: failed.Load(), Seconds: time.Since(start).Seconds()}
	if e, ok := firstErr.Load().(string); ok {
		rep.FirstError = e
	}
	if !spec.Keep {
		cleanup, cancel := context.WithTimeout(context.Background(), floodStopTimeout)
		defer cancel()
		for i, c := range clients {
			if _, err := c.DeleteMany(cleanup, keys[i]); err != nil {
				rep.Error = fmt.Sprintf("delete the flood's keys: %v", err)
				break
			}
		}
	}
	b, _ = json.Marshal(rep)
	fmt.Fprintf(stdout, "%s\n", b)
	return 0
}
