package x509pop

// SetMax bounds the answered challenges c remembers.
func SetMax(c *Challenges, n int) { c.max = n }

// Remembered is how many answered challenges c remembers.
func Remembered(c *Challenges) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.used)
}
