module github.com/dsinfer/dsinfer/samples/go/chat

go 1.19

require github.com/dsinfer/dsinfer/bindings/go v0.0.0

replace github.com/dsinfer/dsinfer/bindings/go => ../../../bindings/go
