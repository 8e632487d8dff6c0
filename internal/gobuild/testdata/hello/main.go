package main

import (
	"fmt"
	"os"
)

// hello says hello, for gobuild's tests.
func main() { fmt.Println("hello from", os.Args[0]) }
