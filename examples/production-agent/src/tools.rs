//! Tools the agent can call: a calculator (a real expression parser, not code
//! evaluation) and a clock.

use composable_rust_agent_patterns::AgentError;

/// Names of the tools the agent offers.
pub const TOOLS: [&str; 2] = ["calculator", "clock"];

/// Longest expression the calculator accepts.
const MAX_EXPRESSION: usize = 256;
/// Deepest parenthesis nesting the calculator accepts.
const MAX_DEPTH: usize = 32;

/// Run a tool by name.
pub fn run(tool: &str, input: &str) -> Result<String, AgentError> {
    match tool {
        "calculator" => calculate(input)
            .map(format_number)
            .map_err(|e| AgentError::tool(tool, e)),
        "clock" => Ok(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        other => Err(AgentError::tool(other, "no such tool")),
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.10}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Evaluate an arithmetic expression: numbers, `+ - * / % ^`, parentheses and
/// unary minus, with the usual precedence (`^` binds tightest, right to left).
pub fn calculate(expression: &str) -> Result<f64, String> {
    if expression.len() > MAX_EXPRESSION {
        return Err(format!(
            "expression longer than {MAX_EXPRESSION} characters"
        ));
    }
    let mut parser = Parser {
        chars: expression.chars().filter(|c| !c.is_whitespace()).collect(),
        pos: 0,
        depth: 0,
    };
    if parser.chars.is_empty() {
        return Err("empty expression".into());
    }
    let value = parser.sum()?;
    if parser.pos != parser.chars.len() {
        return Err(format!(
            "unexpected {:?} at position {}",
            parser.chars[parser.pos], parser.pos
        ));
    }
    if !value.is_finite() {
        return Err("the result is not a finite number".into());
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            let rhs = self.product()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.power()?;
        while let Some(op @ ('*' | '/' | '%' | '×' | '÷')) = self.peek() {
            self.pos += 1;
            let rhs = self.power()?;
            value = match op {
                '*' | '×' => value * rhs,
                _ if rhs == 0.0 => return Err("division by zero".into()),
                '%' => value % rhs,
                _ => value / rhs,
            };
        }
        Ok(value)
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        if self.peek() == Some('^') {
            self.pos += 1;
            self.enter()?;
            let exponent = self.power()?;
            self.depth -= 1;
            return Ok(base.powf(exponent));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('-') => {
                self.pos += 1;
                self.enter()?;
                let v = self.unary()?;
                self.depth -= 1;
                Ok(-v)
            }
            Some('+') => {
                self.pos += 1;
                self.unary()
            }
            _ => self.atom(),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                self.enter()?;
                let v = self.sum()?;
                self.depth -= 1;
                if self.peek() != Some(')') {
                    return Err(format!("missing ')' at position {}", self.pos));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                text.parse().map_err(|_| format!("bad number {text:?}"))
            }
            Some(c) => Err(format!("unexpected {c:?} at position {}", self.pos)),
            None => Err("expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_with_precedence() {
        for (expr, want) in [
            ("2 + 2", 4.0),
            ("2 + 3 * 4", 14.0),
            ("(2 + 3) * 4", 20.0),
            ("2 ^ 3 ^ 2", 512.0),
            ("-3 ^ 2", 9.0),
            ("10 / 4", 2.5),
            ("17 % 5", 2.0),
            ("1.5 * 4", 6.0),
            ("12 × 3 ÷ 4", 9.0),
        ] {
            assert_eq!(calculate(expr), Ok(want), "{expr}");
        }
    }

    #[test]
    fn rejects_what_is_not_arithmetic() {
        for expr in [
            "", "2 +", "1 / 0", "(1 + 2", "rm -rf /", "1..2", "2 ** 3", "9^9^9^9",
        ] {
            assert!(calculate(expr).is_err(), "{expr}");
        }
        assert!(calculate(&"(".repeat(100)).is_err());
        assert!(calculate(&"1+".repeat(200)).is_err());
    }

    #[test]
    fn tools_run_by_name() {
        assert_eq!(run("calculator", "6*7").unwrap(), "42");
        assert_eq!(run("calculator", "1/3").unwrap(), "0.3333333333");
        assert!(run("clock", "").unwrap().ends_with('Z'));
        assert!(matches!(run("shell", "ls"), Err(AgentError::Tool { .. })));
    }
}
