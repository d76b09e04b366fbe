// The C# binding in use: load the demo model, render a chat turn, stream a reply from a
// seeded sampler, parse it. Usage: mono ChatSample.exe MODEL_DIR
// (models/demo is a tiny code model: the reply is Python-like text, not a conversation.)
using System;
using Dsinfer;

static class ChatSample
{
    static void Main(string[] args)
    {
        var options = new SessionOptions
        {
            Progress = f => { Console.Error.Write($"\rloading {100 * f,3:0}%{(f == 1 ? "\n" : "")}"); return true; }
        };
        using (var session = Session.Open(args[0], options))
        using (var ctx = session.NewContext())
        using (var sampler = new Sampler(temperature: 0.7f, seed: 2024))
        using (var parser = new ChatParser())
        {
            Console.WriteLine("dsinfer " + Library.Version + ": " + session.Describe());
            var prompt = Chat.Render("{\"messages\": [{\"role\": \"user\", \"content\": \"Write a function.\"}]}");
            ctx.Eval(session.Tokenizer().Tokenize(prompt, Tokenizer.ParseSpecial));
            ctx.Generate(sampler, 48, (id, text) => { Console.Write(text); parser.Push(text); return true; });
            Console.WriteLine("\nparsed: " + parser.Finish());
        }
    }
}
