module github.com/dsinfer/dsinfer/bindings/go

go 1.19
