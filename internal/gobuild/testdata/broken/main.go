package main

// broken does not compile, for gobuild's tests.
func main() { undefined() }
