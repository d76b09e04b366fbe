// The Go binding in use: load the demo model, render a chat turn, stream a reply from a
// seeded sampler, parse it. Usage: chat MODEL_DIR
// (models/demo is a tiny code model: the reply is Python-like text, not a conversation.)
package main

import (
	"fmt"
	"os"

	dsinfer "github.com/dsinfer/dsinfer/bindings/go"
)

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func run(modelDir string) error {
	session, err := dsinfer.Open(modelDir, &dsinfer.Options{Progress: func(f float32) bool {
		fmt.Fprintf(os.Stderr, "\rloading %3.0f%%", 100*f)
		if f == 1 {
			fmt.Fprintln(os.Stderr)
		}
		return true
	}})
	if err != nil {
		return err
	}
	defer session.Close()
	fmt.Printf("dsinfer %s: %s\n", dsinfer.Version(), session.Describe())
	ctx, err := session.NewContext(0, nil)
	if err != nil {
		return err
	}
	defer ctx.Close()
	params := dsinfer.DefaultSamplerParams()
	params.Temperature, params.Seed = 0.7, 2024
	sampler, err := dsinfer.NewSampler(params)
	if err != nil {
		return err
	}
	defer sampler.Close()
	prompt, err := dsinfer.RenderChat(`{"messages": [{"role": "user", "content": "Write a function."}]}`, false)
	if err != nil {
		return err
	}
	tok, err := session.Tokenizer()
	if err != nil {
		return err
	}
	ids, err := tok.Tokenize(prompt, dsinfer.ParseSpecial)
	if err != nil {
		return err
	}
	if err := ctx.Eval(ids...); err != nil {
		return err
	}
	parser, err := dsinfer.NewChatParser(false)
	if err != nil {
		return err
	}
	defer parser.Close()
	if _, err := ctx.Generate(sampler, 48, func(id int32, text string) bool {
		fmt.Print(text)
		_, err := parser.Push(text)
		return err == nil
	}); err != nil {
		return err
	}
	result, err := parser.Finish()
	if err != nil {
		return err
	}
	fmt.Println("\nparsed:", result)
	return nil
}
