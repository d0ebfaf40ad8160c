//! Describe an image with the library: `cargo run --release --example describe -- MODEL MMPROJ IMAGE`
use std::io::Write;
use std::process::ExitCode;

use minicpmv::{Event, Pair, RunRequest, SessionOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, mmproj, image] = args.as_slice() else {
        eprintln!("usage: describe MODEL.gguf MMPROJ.gguf IMAGE");
        return ExitCode::from(2);
    };
    let request = RunRequest::new("Describe this image.").image(image);
    let mut print_text = |event: Event<'_>| {
        if let Event::Text(text) = event {
            print!("{text}");
            std::io::stdout().flush().ok();
        }
    };
    match Pair::open(model, mmproj, SessionOptions::default())
        .and_then(|mut session| session.run(&request, &mut print_text))
    {
        Ok(out) => println!("\n[{} tokens]", out.token_ids.len()),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
