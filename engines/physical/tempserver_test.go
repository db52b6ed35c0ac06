package physical_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

const tempServerChildEnv = "TIDEMARK_TEST_TEMPSERVER_DATADIR"

// TestTempServerDiesWithTidemark: a tidemark killed with SIGKILL while its
// temporary server runs does not leave the server running on the
// directory: the server gets SIGTERM (Pdeathsig) and shuts down. The
// tidemark is this test binary run again as a child.
func TestTempServerDiesWithTidemark(t *testing.T) {
	if dir := os.Getenv(tempServerChildEnv); dir != "" {
		mysqld, err := physical.FindMysqld("")
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		ts, err := physical.StartTempServer(context.Background(), physical.TempServerParams{Mysqld: mysqld, Datadir: dir})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println("PID", ts.Pid())
		select {} // until killed
	}
	src := testenv.StartMariaDB(t)
	src.Stop()
	child := exec.Command(os.Args[0], "-test.run=^TestTempServerDiesWithTidemark$")
	child.Env = append(os.Environ(), tempServerChildEnv+"="+src.DataDir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	pid := 0
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "PID "); ok {
			pid, _ = strconv.Atoi(v)
			break
		}
		if strings.HasPrefix(line, "ERROR") {
			_ = child.Process.Kill()
			t.Fatal(line)
		}
	}
	if pid == 0 {
		_ = child.Process.Kill()
		t.Fatalf("the child printed no server pid (%v)", sc.Err())
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	deadline := time.Now().Add(testenv.Wait(60 * time.Second))
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			break
		}
		// A zombie (exited, not yet reaped by init) counts as gone.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the temporary server (pid %d) still runs after its tidemark was killed", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
