package sampledata

import "os"

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "verbund-sampledata-") }
