//! The serving and baseline benchmarks' command line: which stream
//! counts, at what request rate, for how long.

pub struct Options {
    pub streams: Vec<usize>,
    pub rate: u64,
    pub seconds: u64,
}

/// `--streams 1,100,10000 --rate 5000 --seconds 10`; `bench` names the
/// benchmark in the usage message. `--help` prints the usage; a bad
/// argument prints it with the reason and exits with status 2.
pub fn options(bench: &str) -> Options {
    let usage = format!("usage: {bench} [--streams 1,100,10000] [--rate 5000] [--seconds 10]");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        std::process::exit(0);
    }
    parse_options(&args).unwrap_or_else(|reason| {
        eprintln!("{bench}: {reason}\n{usage}");
        std::process::exit(2);
    })
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    fn positive<T: std::str::FromStr + Default + PartialOrd>(flag: &str, value: &str) -> Result<T, String> {
        match value.parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(format!("{flag} takes a positive whole number, not {value:?}")),
        }
    }
    let mut options = Options { streams: vec![1, 100, 10_000], rate: 5_000, seconds: 10 };
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--streams", Some(v)) => options.streams = v.split(',').map(|n| positive("--streams", n)).collect::<Result<_, _>>()?,
            ("--rate", Some(v)) => options.rate = positive("--rate", v)?,
            ("--seconds", Some(v)) => options.seconds = positive("--seconds", v)?,
            (flag, None) => return Err(format!("{flag} needs a value")),
            (flag, Some(_)) => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(options)
}
