// The Java binding in use: load the demo model, render a chat turn, stream a reply from a
// seeded sampler, parse it. Usage: java -cp dsinfer.jar:. ChatSample MODEL_DIR
// (models/demo is a tiny code model: the reply is Python-like text, not a conversation.)
import org.dsinfer.Chat;
import org.dsinfer.ChatParser;
import org.dsinfer.Context;
import org.dsinfer.Sampler;
import org.dsinfer.Session;
import org.dsinfer.Tokenizer;

public class ChatSample {
    public static void main(String[] args) {
        try (Session session = Session.open(args[0], new Session.Options().progress(f -> {
                 System.err.printf("\rloading %3.0f%%%s", 100 * f, f == 1 ? "\n" : "");
                 return true;
             }));
             Context ctx = session.newContext();
             Sampler sampler = new Sampler(new Sampler.Params().temperature(0.7f).seed(2024));
             ChatParser parser = new ChatParser(false)) {
            System.out.println("dsinfer " + org.dsinfer.Dsinfer.version() + ": " + session.describe());
            String prompt = Chat.render("{\"messages\": [{\"role\": \"user\", \"content\": \"Write a function.\"}]}", false);
            ctx.eval(session.tokenizer().tokenize(prompt, Tokenizer.PARSE_SPECIAL));
            ctx.generate(sampler, 48, (id, text) -> {
                System.out.print(text);
                parser.push(text);
                return true;
            });
            System.out.println("\nparsed: " + parser.finish());
        }
    }
}
