package seedfile

import (
	"bufio"
	"bytes"
	"encoding/base32"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// writeEntraCSV writes an n-row Entra CSV with fake, distinct 20-byte seeds, as Token2 ships it.
func writeEntraCSV(w io.Writer, n int) error {
	bw := bufio.NewWriter(w)
	rng := rand.New(rand.NewChaCha8([32]byte{'o', 'a', 't', 'h'}))
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	var seed [20]byte
	fmt.Fprint(bw, "\uFEFFupn,serial number,secret key,timeinterval,manufacturer,model\r\n")
	for i := range n {
		for j := 0; j < len(seed); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < len(seed); k++ {
				seed[j+k] = byte(v >> (8 * k))
			}
		}
		fmt.Fprintf(bw, "user%d@contoso.example,%d,%s,30,Token2,C202\r\n", i, 8659612000000+i, enc.EncodeToString(seed[:]))
	}
	return bw.Flush()
}

// TestGenerateEntraCSV writes a big file for measuring the CLI, only when asked:
//
//	OATHPIPE_GEN_ROWS=1000000 OATHPIPE_GEN_OUT=/tmp/1m.csv go test -run TestGenerateEntraCSV ./shared/seedfile
func TestGenerateEntraCSV(t *testing.T) {
	out, rows := os.Getenv("OATHPIPE_GEN_OUT"), os.Getenv("OATHPIPE_GEN_ROWS")
	if out == "" || rows == "" {
		t.Skip("set OATHPIPE_GEN_OUT and OATHPIPE_GEN_ROWS to write a file")
	}
	n, err := strconv.Atoi(rows)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := writeEntraCSV(f, n); err != nil {
		t.Fatal(err)
	}
}

func TestGeneratedFileIsValid(t *testing.T) {
	var buf bytes.Buffer
	if err := writeEntraCSV(&buf, 1000); err != nil {
		t.Fatal(err)
	}
	sum, err := Read(&buf, Options{}, nil, nil)
	if err != nil || sum.Valid != 1000 || sum.Invalid != 0 {
		t.Fatalf("Read = %+v, %v", sum, err)
	}
}

// BenchmarkReadEntraCSV reads 100k- and 1M-row files: rows/s and the bytes each row keeps
// (the duplicate indexes) are reported as metrics.
func BenchmarkReadEntraCSV(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		var buf bytes.Buffer
		if err := writeEntraCSV(&buf, n); err != nil {
			b.Fatal(err)
		}
		data := buf.Bytes()
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				sum, err := Read(bytes.NewReader(data), Options{}, func(Record) error { return nil }, nil)
				if err != nil || sum.Valid != n {
					b.Fatalf("Read = %+v, %v", sum, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
