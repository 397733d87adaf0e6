//! ssehub-loadtest: placeholder until the benchmark issue builds the load generator.

fn main() {
    eprintln!("ssehub-loadtest: not implemented yet; see the benchmark issue");
    std::process::exit(2);
}
