// Command verbund runs a Verbund node and is its command-line client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/verbund/verbund/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
