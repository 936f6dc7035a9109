package pipeline_test

import (
	"fmt"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// The same upload delivered twice is the same import; a new upload under the same name (a new
// ETag) is a new one.
func ExampleImportID() {
	fmt.Println(pipeline.ImportID("token2-2026-11.csv", `"0x8DD0E1A2B3C4D5E"`))
	fmt.Println(pipeline.ImportID("token2-2026-11.csv", `"0x8DD0E1A2B3C4D5E"`))
	fmt.Println(pipeline.ImportID("token2-2026-11.csv", `"0x8DD0E1A2B3C4D60"`))
	fmt.Println(pipeline.RejectedName(pipeline.ImportID("token2-2026-11.csv", `"0x8DD0E1A2B3C4D5E"`), "token2-2026-11.csv"))
	// Output:
	// imp-50a5975110d377cece1154ad
	// imp-50a5975110d377cece1154ad
	// imp-f43afcbe5029fbf677551599
	// imp-50a5975110d377cece1154ad/token2-2026-11.csv
}
